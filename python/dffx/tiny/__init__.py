"""Tiny faces (16-32 px): joint super-resolution and alignment (issue 26; Yin et al., AAAI 2020).

* :mod:`dffx.tiny.degrade`: the training pairs (a large face made tiny through a realistic
  camera, and its high-resolution crop);
* :mod:`dffx.tiny.net`: :class:`~dffx.tiny.net.TinyFaceNet`, the shared encoder, the fused
  intermediate layers and the two heads (super-resolution x4, 68 landmarks);
* :mod:`dffx.tiny.train`: ``dffx train tiny``, resumable training on the 2-core CPU;
* :mod:`dffx.tiny.path`: the network at inference, and the 3DMM fitted to its landmarks, which
  :class:`dffx.FaceAligner` uses for small faces (``tiny="auto"``) and ``super_resolve``.
"""
