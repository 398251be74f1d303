"""`lipnets export`: the model as ONNX, checked against the float64 model at the data's scale and far outside it."""

from __future__ import annotations

import argparse
import json
from typing import Any

ROUNDING = 64 * 2.0**-23
"""Relative error allowed per unit of the model's input-output sensitivity in float32 (64 float32 epsilons)."""


def add_parser(commands: Any) -> None:
    export = commands.add_parser(
        "export",
        help="export a saved model to ONNX",
        description="Export to ONNX (dynamic batch). The input is the encoded table (numeric columns, one 0/1 column per "
        "category, missing flags) in original units; the column names and the encoding are stored in the file's metadata. "
        "The file is checked with onnxruntime against the float64 model, on rows at the data's scale and far outside it.",
    )
    export.add_argument("model", help="model folder written by `lipnets fit`")
    export.add_argument("--onnx", required=True, help="the .onnx file to write")
    export.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="input and weight type (default float32)")
    export.set_defaults(handler=run)


def check_rows(model: Any, indicators: Any, rows: int = 256) -> Any:
    """Encoded inputs to check an export on: numeric columns at mean +- 3 sigma and at up to 1000 sigma, indicators 0/1."""
    import torch

    generator = torch.Generator().manual_seed(0)
    spread = torch.cat([torch.full((rows // 2, 1), 3.0), torch.logspace(1, 3, rows - rows // 2)[:, None]]).to(torch.float64)
    z = torch.randn(rows, len(model.mean), generator=generator, dtype=torch.float64) * spread / 3
    flags = torch.as_tensor(indicators)
    values = model.mean + model.scale * z
    values[:, flags] = torch.randint(0, 2, (rows, int(flags.sum())), generator=generator).to(torch.float64)
    return values


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import onnx
    import onnxruntime
    import torch

    from ..bounds import lipschitz_bound
    from ..export import to_onnx
    from ..io.atomic import atomic_file
    from ..sklearn.persistence import load_model, read_estimator_config

    config = read_estimator_config(args.model)
    estimator = load_model(args.model)
    model = estimator.model_
    dtype = {"float32": torch.float32, "float64": torch.float64}[args.dtype]
    sample = check_rows(model, estimator.encoder_.indicators())
    sample = sample.to(dtype).to(torch.float64)  # inputs the exported model can take exactly
    with atomic_file(args.onnx) as temporary:
        path = to_onnx(model, temporary.with_suffix(".onnx"), example_input=sample[:3], check_input=sample, dtype=dtype)
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        actual = session.run(None, {"input": sample.numpy().astype(np.float32 if dtype == torch.float32 else np.float64)})[0]
        with torch.no_grad():
            expected = model(sample).numpy()
        z = ((sample - model.mean) / model.scale).abs().sum(dim=1, keepdim=True).numpy()
        eps = ROUNDING if dtype == torch.float32 else 64 * 2.0**-52
        bound = lipschitz_bound(model.network)
        tolerance = eps * (model.target_scale.numpy() * (1.0 + bound * z) + np.abs(expected))
        error = np.abs(actual - expected)
        if not (error <= tolerance).all():
            worst = int(np.argmax(error.max(axis=1) / tolerance.max(axis=1)))
            path.unlink(missing_ok=True)
            raise RuntimeError(
                f"the {args.dtype} ONNX model differs from the model by {error[worst].max():.3g} on a check row, more than "
                f"{args.dtype} rounding allows ({tolerance[worst].max():.3g}); nothing was written. "
                + ("Export with --dtype float64 for a model whose inputs need more precision." if dtype == torch.float32 else "")
            )
        document = onnx.load(str(path))
        for key, value in {
            "lipnets_input_columns": json.dumps(estimator.encoder_.encoded_names()),
            "lipnets_encoder": json.dumps(config["encoder"]),
            "lipnets_lipschitz_bound": repr(estimator.lipschitz_bound_),
        }.items():
            document.metadata_props.add(key=key, value=value)
        onnx.save(document, str(temporary))
        path.unlink(missing_ok=True)
    kind = "logits" if hasattr(estimator, "classes_") else "predictions"
    width = len(estimator.encoder_.encoded_names())
    print(
        f"wrote {args.onnx}: input 'input' (batch, {width}) holding the encoded columns in original units "
        f"({', '.join(estimator.encoder_.encoded_names())}; listed in the file's metadata as lipnets_input_columns), "
        f"output 'output' {kind}; onnxruntime matches the model within {args.dtype} rounding on {len(sample)} check rows"
    )
    return 0
