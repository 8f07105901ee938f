"""CLIP-AUTT test-time adaptation and the baselines that adapt per video, as library code.

- ``text_forward``: open_clip's text forward rebuilt to take token embeddings (plain and
  fast paths), with the start-up checks that refuse towers where that is not valid;
- ``context``: prompts with learnable context vectors (template and reference layouts);
- ``config``: ``AdaptConfig``;
- ``autt``: CLIP-AUTT for one target subject, or several sharing forwards;
- ``tta_cap``: TTA-CaP, frozen-cache variant; ``tpt``: TPT-style prompt tuning per video.

Arrays and tensors in, arrays and dataclasses out: no storage, Ray or CLI here. Target
labels never enter: no function in this package takes them.
"""
