"""samplerflow: whole-slide images to SAMPLER slide representations and classifiers."""

__version__ = "0.1.0"
