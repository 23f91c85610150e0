"""vaekit in other tools' formats and services; each module imports its library only when used."""
