"""``somad export`` (a model as one ONNX graph) and ``somad check-export`` (the graph against the Python path)."""

from __future__ import annotations

import argparse

from somad import check_output_file, claimed, export, image_paths, load_any_model, read_image
from somad.digest import file_sha256


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="write a model as one ONNX graph: images in, maps and scores out"
    )
    p.add_argument("model")
    p.add_argument(
        "--format",
        default="onnx",
        choices=["onnx", "openvino"],
        help="onnx (onnxruntime), or openvino: IR converted from the same graph (.xml and .bin)",
    )
    p.add_argument("--out", required=True, help="the file to write: .onnx, or .xml for openvino")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(handler=cmd_export)
    p = subparsers.add_parser(
        "check-export",
        help="score images with an exported graph and with the model; compare maps, scores, verdicts",
    )
    p.add_argument("model")
    p.add_argument("graph", help="the exported .onnx file, or an OpenVINO .xml")
    p.add_argument("paths", nargs="+", help="image files or folders")
    p.set_defaults(handler=cmd_check_export)


def cmd_export(args: argparse.Namespace, progress) -> int:
    check_output_file(args.out, overwrite=args.overwrite, inputs=[args.model])
    model = load_any_model(args.model, device="cpu")
    with claimed(args.out):
        out = check_output_file(args.out, overwrite=args.overwrite, inputs=[args.model])
        if args.format == "openvino":
            from somad.export_openvino import export_openvino

            check_output_file(out.with_suffix(".bin"), overwrite=args.overwrite, inputs=[args.model])
            export_openvino(model, out, model_digest=file_sha256(args.model))
        else:
            export.export_onnx(model, out, model_digest=file_sha256(args.model))
    size = model.config.features.image_size
    print(
        f"wrote {out}: input image uint8 (N, {size}, {size}, 3) RGB; outputs anomaly_map, score ({model.label})"
    )
    return 0


def cmd_check_export(args: argparse.Namespace, progress) -> int:
    model = load_any_model(args.model, device="cpu")
    images = [read_image(p) for p in image_paths(args.paths)]
    result = export.check_export(model, args.graph, images)
    verdicts = (
        "n/a (the model holds no threshold)"
        if result.threshold is None
        else ("all agree" if result.verdicts_agree else "DISAGREE")
    )
    print(f"{result.n_images} images at {model.config.features.image_size} px")
    print(
        f"maps:   largest difference {result.max_abs_map:.3g} ({result.max_rel_map:.2g} of the map's range)"
    )
    print(f"scores: largest difference {result.max_abs_score:.3g} ({result.max_rel_score:.2g} relative)")
    print(f"verdicts at the model's threshold: {verdicts}")
    print(f"{'agreement' if result.agrees else 'DISAGREEMENT'} (tolerance {export.TOLERANCE:g} relative)")
    return 0 if result.agrees else 1
