"""Tiny faces (16-32 px): joint super-resolution and alignment (issue 26; Yin et al., AAAI 2020).

So far: :mod:`dffx.tiny.degrade`, the training pairs (a large face made tiny through a realistic
camera, and its high-resolution crop). The network, its training and ``FaceAligner(tiny=...)``
are not built yet.
"""
