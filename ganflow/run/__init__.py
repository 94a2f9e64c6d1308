"""A run's files: `RunLayout` (the one owner of every path in a run), `Run` (reading and writing
them in a Store), the checkpoint format (safetensors + sha256 manifest, written last), and
`load_generator` (a generator back from a checkpoint alone)."""
