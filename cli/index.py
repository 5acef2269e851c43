"""Build a search index over a library of embedded molecules, for `moleclip search`.

The library is an embeddings file from `moleclip embed` (.parquet or .csv: the input's columns plus emb_0..); rows
embed could not draw are left out. The index folder holds the faiss index, the library's columns (IDs, SMILES...)
and a manifest (metric, kind, count, dimension, the embeddings file's SHA-256). Exact search compares every
molecule; HNSW is approximate and much faster on large libraries; --kind auto (default) takes HNSW above 100,000
molecules of a 512-number embedding (library size x dimension above 51.2 million).

Needs faiss: pip install "moleclip[index]".

Examples:
  moleclip embed --model my-moleclip/ --input library.csv --output library_emb.parquet
  moleclip index --embeddings library_emb.parquet --output library_index/
  moleclip index --embeddings big_emb.parquet --output big_index/ --kind hnsw --overwrite
"""

from __future__ import annotations

NAME = "index"
HELP = "build a vector index of an embedded library (for moleclip search)"


def add_arguments(parser) -> None:
    parser.add_argument("--embeddings", required=True,
                        help="embeddings file from moleclip embed (.parquet, .csv, .tsv)")
    parser.add_argument("--output", required=True, help="the index folder to write")
    parser.add_argument("--smiles-column", default=None,
                        help="the SMILES column (default: the one `moleclip embed` was told, recorded in a .parquet; "
                             "else the column named smiles, canonical_smiles, smi or mol)")
    parser.add_argument("--metric", default="cosine", choices=["cosine", "l2"],
                        help="cosine similarity (default) or Euclidean distance")
    parser.add_argument("--kind", default="auto", choices=["auto", "exact", "hnsw"],
                        help="exact (every molecule compared), hnsw (approximate, fast on large libraries), or auto "
                             "(default: hnsw above 100,000 molecules x 512 dimensions)")
    parser.add_argument("--overwrite", action="store_true", help="replace an index already in the folder")


def run(args) -> int:
    from moleclip.training.retrieval.index import (build_library_index, check_index_folder, read_embeddings,
                                                 save_index)

    check_index_folder(args.output, args.overwrite, embeddings=args.embeddings)  # before reading a large file
    library = read_embeddings(args.embeddings, args.smiles_column)
    if library.skipped:
        rows = "1 row" if library.skipped == 1 else f"{library.skipped} rows"
        print(f"note: {rows} of {args.embeddings} without an embedding (embed could not draw them) left out of the "
              "index")
    index = build_library_index(library, metric=args.metric, kind=args.kind)
    save_index(index, args.output, overwrite=args.overwrite)
    print(f"wrote an index of {index.count} molecules ({index.kind}, {index.metric}, {index.dimension} dimensions) "
          f"to {args.output}")
    return 0
