"""The face pipeline: decode, detect, analyse, align and embed, run by one :class:`Engine`.

imaging -> detect -> landmarks/analyze -> align -> embed (embed_onnx on onnxruntime, dlib as
the reference); :mod:`regard.face.engine` owns the loaded models and runs every stage. Nothing
here knows collections, HTTP, the terminal or accountability.
"""
