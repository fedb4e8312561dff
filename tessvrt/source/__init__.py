"""Where TESSERA pixels come from: the dataset table and bucket layouts, manifests, S3 reads, .npy bytes."""
