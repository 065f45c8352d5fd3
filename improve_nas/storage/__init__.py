"""Where a run's files live and how they are written.

    fileio           atomic writes (temporary name, then rename), the umask's file mode, left-over clean-up
    gcs              Google Cloud Storage: URLs, objects, `DirectoryMirror` of a local directory and a gs:// prefix
    run_location     a run directory: local, or gs:// trained in a local working copy
    run_lock         one writer per run directory (a file lock, or a gs:// object with a generation precondition)
    integrity        manifests (size, SHA-256) of published iterations and exports, and their checks
"""
