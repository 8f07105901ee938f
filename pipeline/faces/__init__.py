"""The face stage: decode sampled frames, detect (MTCNN), track one face per sample, crop."""
