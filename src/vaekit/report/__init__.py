"""The parts of `vaekit compare`: pure metrics, the FCD feature classifier, the HTML page."""
