"""Sample-quality reports: network-free metrics of generated sprites against the real ones."""
