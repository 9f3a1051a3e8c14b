"""Deployable policy artifacts: export a trained `policy.pt`, run it without Ray or torch.

`runtime` needs only numpy (plus onnxruntime for `.onnx` files) and imports nothing from
this project, so it can be copied next to an artifact onto the car. `export` (which needs
torch) writes the artifacts from a checkpoint.
"""
