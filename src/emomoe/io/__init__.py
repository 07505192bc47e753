"""Checkpoint I/O in the released Hugging Face EMO format."""

from emomoe.io.checkpoint import (
    CheckpointError,
    expected_shapes,
    load_model,
    read_config,
    save_model,
    tensor_files,
    tensor_shapes,
    write_checkpoint,
)

__all__ = [
    "CheckpointError", "load_model", "save_model", "read_config", "tensor_files", "tensor_shapes",
    "expected_shapes", "write_checkpoint",
]
