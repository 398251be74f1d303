"""Saving and loading: weights and checkpoints (read with weights_only=True), model folders, one atomic writer."""

from .atomic import atomic_file, atomic_folder
from .checkpoints import CheckpointError, load_checkpoint, load_weights, save_checkpoint, save_weights
from .model_folder import ModelFolderError, read_model_folder, write_model_folder

__all__ = [
    "CheckpointError",
    "ModelFolderError",
    "atomic_file",
    "atomic_folder",
    "load_checkpoint",
    "load_weights",
    "read_model_folder",
    "save_checkpoint",
    "save_weights",
    "write_model_folder",
]
