"""The model-directory room: a trained model on disk, one file per partition, and its edits.

``format`` (the manifest, safetensors files, sha256 checks, ``ModelDir``) -> ``runs`` (a run
directory's checkpoints) -> ``export`` (a checkpoint as weights only) -> ``crop`` (delete
partitions' files) -> ``append`` (new partitions' files for appended samples, written by
``distlg.training.extend``).

It may import: ``distlg.nn``, ``distlg.geometry``, ``distlg.data.signal``, ``distlg.staging``
and ``distlg.errors``; torch and safetensors. It never imports training (the trainer writes its
checkpoints through ``format``), distribution or rendering: it holds files, not a trainer.
"""
