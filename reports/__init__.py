"""How good are the samples, and why: measures, the sets they are read against, PokeNet, figures and reports.

Libraries: measures.py (pixel measures, FID/KID where Inception is on disk), manifold.py
(neighbourhoods), pokenet.py (the species classifier), creature.py (measures in PokeNet's eyes),
species.py (species-conditioned samples), reference.py (sets of known quality, every training
image), colour.py (hues), noising.py (the forward process in pictures and numbers), comparison.py
(the latent-against-pixel report). The other modules are commands (`python -m reports.<name>`).
"""
