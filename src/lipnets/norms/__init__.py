"""Operator norms and sound bounds of matrices and convolutions (pure functions)."""

from .conv import aol_scale, circular_conv_norm, conv_gram_bound, conv_norm_bound, conv_symbol, kernel_gram, rko_bound, rko_factor
from .dense import (
    LAYER_NORMS,
    as_layer_norm,
    cheap_spectral_bound,
    gram_spectral_bound,
    gram_spectral_bound_and_vector,
    layer_operator_norm,
    near_orthogonal_bound,
    operator_norm,
)
from .vector import VECTOR_NORMS, as_vector_norm, conversion_factor, dual, order

__all__ = [
    "LAYER_NORMS",
    "VECTOR_NORMS",
    "aol_scale",
    "as_layer_norm",
    "as_vector_norm",
    "cheap_spectral_bound",
    "circular_conv_norm",
    "conv_gram_bound",
    "conv_norm_bound",
    "conv_symbol",
    "conversion_factor",
    "dual",
    "gram_spectral_bound",
    "gram_spectral_bound_and_vector",
    "kernel_gram",
    "layer_operator_norm",
    "near_orthogonal_bound",
    "operator_norm",
    "order",
    "rko_bound",
    "rko_factor",
]
