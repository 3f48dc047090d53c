"""segmentation: see the package map in tl_research/__init__.py."""
