"""Image storage: one ``ImageStore`` protocol, a local-directory and an S3-compatible backend,
and the image catalog kept in the same store."""
