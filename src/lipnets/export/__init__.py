"""Export: plain PyTorch with the constraints baked in, ONNX (needs lipnets[onnx]), and certified programs.

`to_low_precision`, `to_onnx_int8` and `to_cpp` ship a model's `Program` with rounded weights and refuse
(`ExportGuaranteeError`) when the rounding would lose a guarantee.
"""

from .cpp import compile_header, sorting_network, to_cpp
from .int8 import to_onnx_int8
from .onnx import to_onnx
from .plain import to_plain
from .precision import Export, ExportGuaranteeError, GuaranteeReport, PairCheck, certify_export, dense_pairs, to_low_precision
from .program import Program, ProgramCertificate, ProgramError, Step, round_to, trace_program

__all__ = [
    "Export",
    "ExportGuaranteeError",
    "GuaranteeReport",
    "PairCheck",
    "Program",
    "ProgramCertificate",
    "ProgramError",
    "Step",
    "certify_export",
    "compile_header",
    "dense_pairs",
    "round_to",
    "sorting_network",
    "to_cpp",
    "to_low_precision",
    "to_onnx",
    "to_onnx_int8",
    "to_plain",
    "trace_program",
]
