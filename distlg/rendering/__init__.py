"""The rendering room: regions of a model directory evaluated in bounded memory and written out.

``region`` (the BOX syntax, the ``RenderGrid`` a render samples, ``Slab`` and ``RenderError``)
-> ``render`` (one evaluator for every render; ``RegionRender`` streams a region slab by slab,
reading only the files of the partitions it needs) -> ``limits`` (what a render may be asked:
--rate and --level where the output uses them, an output that fits the disk) -> ``writers``
(zarr, npy, mp4, png, wav, meshes; they import ``region``'s small types, not the evaluator) and
``compare`` (a render scored against a signal, ``distlg.metrics``' PSNR and SSIM).

It may import: ``distlg.nn`` (to evaluate), ``distlg.modeldir.format`` (to read),
``distlg.data`` (signal types, stores) and the ground-floor helpers (``geometry``, ``metrics``,
``resources``, ``staging``, ``errors``). It never imports training (``distlg.training``),
torch.distributed or accelerate.
"""
