"""Search an indexed library by structure (SMILES) or by picture (a drawing of a molecule from any program, or one
cropped from a paper): the k most similar library molecules of each query.

A query ending in .png, .jpg/.jpeg, .bmp, .gif, .tif/.tiff or .webp is a picture file; anything else is a SMILES.
SMILES are drawn as the model sees molecules; pictures are made RGB on white (transparency too), centred on a white
square when they are not square, then resized and normalised by the model's processor. Crop a picture with a small
white margin around the molecule, as drawings have. Use the model that embedded the library: a .parquet from `moleclip
embed` records it (then --model may be left out, another model is refused, and its drawing settings are used);
otherwise the embedding sizes must match, and give --r-groups if embed used it.

The output has one row per hit: query_number, query, query_type, rank (1 = nearest), score (cosine similarity, or
Euclidean distance for an l2 index), library_row (0-based row of the embeddings file), then every library column
(SMILES, IDs...) in the library's order. k above the library's size is lowered to it, with a note. A query that cannot
be used (a SMILES that does not parse, a picture that cannot be read) stops the search with an error naming it.

Examples:
  moleclip search --index library_index/ --model my-moleclip/ --query "CC(=O)Nc1ccc(O)cc1" -k 5 --output hits.csv
  moleclip search --index library_index/ --model my-moleclip/ --query figure2_compound.png --query CCO --output hits.csv
  moleclip search --index library_index/ --model my-moleclip/ --queries queries.smi -k 20 --output hits.parquet
"""

from __future__ import annotations

NAME = "search"
HELP = "find the library molecules nearest to SMILES or pictures (needs moleclip index)"


def add_arguments(parser) -> None:
    parser.add_argument("--index", required=True, help="index folder made by moleclip index")
    parser.add_argument("--model", default=None,
                        help="the checkpoint that embedded the library (default: the one the index records, if any)")
    parser.add_argument("--query", action="append", default=[], metavar="SMILES|PICTURE",
                        help="a SMILES or a picture file (.png, .jpg...); repeat for several")
    parser.add_argument("--queries", default=None, metavar="FILE",
                        help="a file of queries (.smi/.txt: one a line; .csv/.tsv/.parquet: see --query-column); "
                             "picture paths in it are relative to the file's folder")
    parser.add_argument("--query-column", default=None,
                        help="the column of --queries holding SMILES or picture paths (default: the column named "
                             "smiles, canonical_smiles, smi or mol)")
    parser.add_argument("-k", "--top-k", dest="k", type=int, default=10, help="hits per query (default 10)")
    parser.add_argument("--output", required=True, help=".csv, .tsv (optionally .gz) or .parquet")
    parser.add_argument("--ef-search", type=int, default=None,
                        help="HNSW indexes only: candidates kept by the graph walk (default 128; more is slower and "
                             "more exact)")
    parser.add_argument("--r-groups", action="store_true", help="draw SMILES queries with R-group labels, as embed "
                        "--r-groups drew the library")
    parser.add_argument("--batch-size", type=int, default=64, help="molecules per forward pass")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: best available)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args) -> int:
    from moleclip.training.outputs import hold_output_file

    from ._common import check_output_suffix

    check_output_suffix(args.output, inputs={"--queries": args.queries})
    if args.k < 1:
        raise ValueError(f"-k must be at least 1, got {args.k}")
    if not args.query and args.queries is None:
        raise ValueError("give at least one --query (a SMILES or a picture file) or --queries FILE")
    with hold_output_file(args.output):
        return _search(args)


def _queries(args):
    from pathlib import Path

    from moleclip.training.retrieval.queries import Query, is_picture

    from ._common import read_input

    queries = [Query(text, "picture" if is_picture(text) else "smiles", f"--query {i}")
               for i, text in enumerate(args.query, start=1)]
    if args.queries is not None:
        table = read_input(args.queries, args.query_column)
        folder = Path(args.queries).expanduser().parent
        for row, text in enumerate(table.smiles):
            origin = f"line {table.line(row)} of {args.queries}"
            if is_picture(text):
                path = Path(text.strip()).expanduser()
                queries.append(Query(str(path if path.is_absolute() else folder / path), "picture", origin))
            else:
                queries.append(Query(text, "smiles", origin))
    if not queries:
        raise ValueError(f"{args.queries} holds no queries")
    return queries


def _check_same_model(args, recorded: dict, model) -> None:
    """Scores compare the queries' embeddings with the library's: from another encoder they mean nothing. Refused
    when the index records the encoder's weights (embed records them), also for the recorded model's folder changed
    since; otherwise only the names can be compared, and a difference is a warning."""
    from ._common import encoder_fingerprint, model_name

    if recorded.get("encoder_sha256"):
        if encoder_fingerprint(model) != recorded["encoder_sha256"]:
            given = f"--model {args.model}" if args.model else f"the model {recorded.get('model')}"
            raise ValueError(f"{given} is not the model that embedded the library of {args.index} (made with "
                             f"{recorded.get('model')}; the encoder's weights differ): search with that model, or "
                             "embed the library again with this one and rebuild the index")
    elif args.model and recorded.get("model") and str(recorded["model"]) != model_name(args.model):
        print(f"warning: {args.index} was embedded with {recorded['model']}, not --model {args.model}: scores are "
              "only meaningful with the model that embedded the library")


def _search(args) -> int:
    from moleclip.configuration_moleclip import MODEL_PRESETS
    from moleclip.training.serving.hub import load_encoder, load_processor
    from moleclip.training.inference.devices import choose_device
    from moleclip.training.retrieval.index import load_index
    from moleclip.training.retrieval.queries import embed_queries

    from moleclip.training.outputs import STANDARDIZED_COLUMN

    from ._common import write_table

    index = load_index(args.index)
    recorded = index.manifest.get("embedded_with") or {}
    model_name = args.model or recorded.get("model")
    if not model_name:
        raise ValueError(f"--model is required: {args.index} does not record which model embedded its library "
                         f"(give the one `moleclip embed` used; its embeddings have {index.dimension} dimensions)")
    if str(model_name) in MODEL_PRESETS:
        raise ValueError(f"--model {model_name} is a randomly initialised preset, whose weights are not those that "
                         "embedded the library: save one with `moleclip init --backbone "
                         f"{model_name} --output-dir DIR` and embed and search with DIR")
    if args.ef_search is not None and index.kind != "hnsw":
        raise ValueError(f"--ef-search only applies to an HNSW index; {args.index} is {index.kind}")
    queries = _queries(args)  # read before the model loads: a bad queries file fails at once
    device = choose_device(args.device) if args.device is not None else None
    model = load_encoder(model_name)
    if model.config.projection_dim != index.dimension:
        raise ValueError(f"--model {model_name} gives {model.config.projection_dim}-dimensional embeddings but "
                         f"{args.index} holds {index.dimension}-dimensional ones: use the model that embedded the "
                         "library")
    _check_same_model(args, recorded, model)
    if args.r_groups and recorded and not recorded.get("r_groups", True):
        raise ValueError(f"--r-groups: {args.index} was embedded without R-group labels; queries drawn with them "
                         "would not be comparable: leave --r-groups out")
    processor = load_processor(model_name)
    if recorded.get("standardize"):
        processor.standardize = recorded["standardize"]  # queries prepared as the library's molecules were
    elif not recorded and STANDARDIZED_COLUMN in index.library.columns and processor.standardize == "none":
        # a CSV from `embed --standardize parent` records no settings, but its standardised-SMILES column shows them
        processor.standardize = "parent"
        print(f"note: {args.index}'s library has a {STANDARDIZED_COLUMN} column (embedded with --standardize parent):"
              " the queries are standardised the same way")
    r_groups = args.r_groups or bool(recorded.get("r_groups"))
    vectors = embed_queries(model, processor, queries, batch_size=args.batch_size, device=device,
                            progress=not args.no_progress, r_groups=r_groups)
    if args.k > index.count:
        print(f"note: -k {args.k} is more than the {index.count} molecules in the library; returning all of them")
    hits = index.hits(vectors, args.k, queries, ef_search=args.ef_search)
    write_table(hits, args.output)
    print(f"wrote {len(hits)} hits for {len(queries)} {'query' if len(queries) == 1 else 'queries'} to {args.output}")
    return 0
