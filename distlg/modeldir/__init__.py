"""The model-directory room: a trained model on disk, one file per partition, and its edits.

``format`` (the manifest, safetensors files, sha256 checks, ``ModelDir``) -> ``checkpoint``
(every worker writes its own partitions, resume on any number of workers) -> ``export``
(a checkpoint as weights only) -> ``crop`` (delete partitions' files) -> ``extend`` (new
partitions for appended samples, trained by the trainer's own step loop).

It may import: ``distlg.nn``, ``distlg.geometry``, ``distlg.data.signal`` and ``distlg.errors``
(``format``, ``export``, ``crop``); ``distlg.parallel`` for the collectives of ``checkpoint``;
the trainer's parts (``optim``, ``plan``, ``data.sampling``, ``metrics``) in ``extend`` only.
Nothing here imports ``distlg.train`` or ``distlg.rendering``.
"""
