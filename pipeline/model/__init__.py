"""The CLIP-AU head and everything around it that needs no storage, Ray or CLI.

- ``head``: ``HeadConfig`` + ``CLIPAUHead`` (raw frame and AU text features in; logits,
  AU similarities, clip embeddings and per-frame AU activations out), and the mapping from
  the public reference code's parameter names.
- ``clips``: the strided training / evaluation clips of method.md, as frame indices.
- ``train``: the seeded training function and ``predict``.
- ``checkpoint``: ``<dir>/model.safetensors`` + ``<dir>/model.json``, never unpickled;
  import of reference-format checkpoints; compatibility checks against a workspace.
- ``baselines``: zero-shot, positive-negative prompts and the AU linear probe.

Nothing here reads the embedding cache: callers pass arrays in and get arrays back.
"""
