"""The viewer wing: a model directory looked at in the browser (``distlg view``).

``views`` (what the page asks for, rendered from the model: tiles of an image, a video frame or
a volume's slice at the zoom's scale, a waveform's envelope, a clip to play, the ground truth
and the PSNR of what is visible, the crop command of a box) -> ``app`` (the starlette
application: routes, a byte-bounded tile cache, renders in worker threads, one line per error
on the terminal) -> ``server`` (uvicorn on 127.0.0.1, the port claimed first; the neuroglancer
extra). The page itself is package data (``static/``: plain HTML, CSS and JavaScript).

It may import: ``distlg.rendering`` (to render), ``distlg.modeldir.format`` (to open models),
``distlg.data`` (signal types, stores) and the ground-floor helpers; starlette and uvicorn
(the ``view`` extra), neuroglancer (its own extra). It never imports training.
"""
