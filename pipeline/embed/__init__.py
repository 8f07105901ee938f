"""The frozen CLIP embedding stage: backbone loading, preprocessing, prompts, text features."""
