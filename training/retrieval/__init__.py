"""Vector search: the index over embedded libraries and queries (SMILES or pictures) embedded as the library was."""
