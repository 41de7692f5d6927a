"""The cascaded regression of paper Sec. III-C: descent directions over landmark features.

All geometry lives in the canonical 224x224 face crop (:mod:`dffx.preprocess`), where the
synthesized training samples are framed exactly as a detected face is at inference.

Per iteration k (eq. 4-8): project the current shape with the current camera, find the 160
landmarks' visibility in the depth buffer, sample the features F^(k) (hidden ones zero),

    X_hat = X + R_X F + b_X,      w <- w + R_w F + b_w,

then fit the shape parameters to X_hat under w (eq. 6-8) and re-project. Training (eq. 9-11)
runs the same loop on synthesized samples with one generic shape shared by all images, fits
(R, b) by ridge regression per iteration, and re-fits the generic shape by eq. 11.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import scipy.linalg

from .. import _blas
from ..geometry.camera import project
from ..ops.raster import mesh_landmark_visibility
from ..ops.shape_fit import fit_shape, fit_shared_shape
from ..preprocess import CROP_SIZE
from .camera_refit import MIN_SCALE, REFIT_PRIOR, REFIT_ROUNDS, refit_cameras
from .confidence import UNCALIBRATED_MIN_SCORE, alignment_score, landmark_template
from .pose_sectors import check_sector_yaw, sector_weights

DEFAULT_STAGES = 3
DEFAULT_W_REG = 0.5          # eq. 6 prior weight against the landmark term in cm^2 (as the photo fit)
DEFAULT_BOX_SHIFT = 0.05     # training boxes: shift up to this fraction of the crop side
DEFAULT_BOX_SCALE = 0.1      # training boxes: scale by up to 1 +- this
# The first shipped cascades (grid 1..1000) both picked the smallest value, so the grid reaches lower;
# a cascade on 5,649 x 5 faces picked 0.1, its smallest, for the first stage, hence 0.01 and 0.03.
LAMBDA_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0, 1000.0)
GEOMETRY_CHUNK = 128
RUN_CHUNK = 32               # faces Cascade.run aligns at once (a multiple of the network's batch of 16)
TEMPLATE_IMAGES = 1000       # training faces averaged into the confidence template


@dataclass
class CascadeState:
    """Per-face state of the cascade (B faces, in crop pixels).

    camera: float64 (B, 6); params: float32 (B, M) or (M,) shared (training's generic face);
    X: (B, 68, 2) landmarks; U: (B, 160, 2) dense landmarks; V: bool (B, 160) visibility;
    score: float64 (B,) alignment confidence after the last iteration
    (:func:`dffx.align.confidence.alignment_score`; None when the cascade has no template).
    """

    camera: np.ndarray
    params: np.ndarray
    X: np.ndarray | None = None
    U: np.ndarray | None = None
    V: np.ndarray | None = None
    score: np.ndarray | None = None


def update_geometry(model, state: CascadeState, threads: int = 0) -> CascadeState:
    """Project the shape(s) with the cameras; fill X, U and the depth-buffer visibility V."""
    B = len(state.camera)
    m1 = model.n_identity
    shared = state.params.ndim == 1
    X = np.empty((B, 68, 2), np.float32)
    U = np.empty((B, len(model.landmarks160), 2), np.float32)
    V = np.empty((B, len(model.landmarks160)), bool)
    base = model.shape(state.params[:m1], state.params[m1:]) if shared else None
    for lo in range(0, B, GEOMETRY_CHUNK):
        hi = min(lo + GEOMETRY_CHUNK, B)
        shapes = base if shared else model.shape(state.params[lo:hi, :m1], state.params[lo:hi, m1:])
        screen = project(shapes, state.camera[lo:hi])
        if screen.ndim == 2:
            screen = screen[None]
        V[lo:hi] = mesh_landmark_visibility(screen, model.triangles, model.landmarks160, CROP_SIZE, threads=threads)
        U[lo:hi] = screen[:, model.landmarks160, :2]
        X[lo:hi] = screen[:, model.landmarks68, :2]
    state.X, state.U, state.V = X, U, V
    return state


def _design(F: np.ndarray) -> np.ndarray:
    return np.hstack([F, np.ones((len(F), 1), F.dtype)])


def ridge_select(F_train, targets: list, F_val, val_targets: list, lambdas=LAMBDA_GRID,
                 weights=None, val_weights=None):
    """Ridge regressions (eq. 9/10: R and b regularised alike), lambda chosen on held-out data.

    One Cholesky factorisation per lambda serves every target group.

    Args:
        F_train: (N, D) features; targets: list of (N, T_g) displacement groups (e.g. landmarks
            and camera); F_val, val_targets: the held-out counterparts.
        lambdas: candidate regularisers (scaled by N / 1000, or the weights' sum / 1000, so the
            choice does not depend on N).
        weights, val_weights: optional (N,) / (N_val,) non-negative sample weights (a weighted
            least-squares fit and a weighted held-out error: the yaw sectors of
            :mod:`dffx.align.pose_sectors`).

    Returns:
        list per group of (R (D + 1, T_g) float32 including the bias row, chosen lambda,
        {lambda: held-out MSE}).
    """
    Z = _design(F_train.astype(np.float64))
    Zw = Z if weights is None else Z * np.asarray(weights, np.float64)[:, None]
    gram = Zw.T @ Z
    rhs = Zw.T @ np.hstack(targets).astype(np.float64)
    del Zw
    Zv = _design(F_val.astype(np.float64))
    vw = None if val_weights is None else np.asarray(val_weights, np.float64)[:, None]
    bounds = np.cumsum([0] + [t.shape[1] for t in targets])
    scale = max(len(Z) if weights is None else float(np.sum(weights)), 1) / 1000.0
    best = [None] * len(targets)
    errors = [{} for _ in targets]
    for lam in lambdas:
        R = scipy.linalg.cho_solve(scipy.linalg.cho_factor(gram + lam * scale * np.eye(len(gram))), rhs)
        for g, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
            sq = (val_targets[g] - Zv @ R[:, lo:hi]) ** 2
            err = float(np.mean(sq) if vw is None else np.sum(sq * vw) / (np.sum(vw) * sq.shape[1]))
            errors[g][lam] = err
            if best[g] is None or err < best[g][2]:
                best[g] = (R[:, lo:hi].astype(np.float32), lam, err)
    return [(b[0], b[1], e) for b, e in zip(best, errors)]


@dataclass
class Cascade:
    """Learned descent directions (eq. 4-5) for one feature type.

    Attributes:
        features: "dff" or "sift".
        mean_camera: float64 (6,) initial camera w^(0) in the 224 crop (Sec. III-C1).
        R_X: float32 (K, D + 1, 136) landmark directions (last row = b_X).
        R_w: float32 (K, D + 1, 6) camera directions (last row = b_w).
        w_reg: eq. 6 prior weight used when re-fitting the shape.
        info: training metadata (data, lambdas, held-out errors per stage).
        template: float32 (L, C) mean unit landmark descriptor of training faces, which scores
            results (:mod:`dffx.align.confidence`); None in files written before it existed.
        refit_rounds, refit_prior: the camera refit after the last stage
            (:mod:`dffx.align.camera_refit`): rounds (0 turns it off) and the prior kappa
            (cm^2 per rad^2). Settings of inference, not stored in the .npz.
        landmarks68: int64 (68,) the model vertices whose projections the cascade regresses
            (its landmark convention, :mod:`dffx.model.annotated_landmarks`); None for files
            written before 2026-12-06, which regress ICT's published vertices (the model's own).
            :meth:`bind` gives the model with these landmarks; :meth:`run` binds by itself.
        sector_yaw: float64 (S,) yaw-sector centres in degrees, or None (every stage generic).
            With them, the stages after the ``len(R_X)`` generic ones blend per-sector
            directions by the current yaw (:mod:`dffx.align.pose_sectors`, issue 27):
        R_X_sectors: float32 (K_s, S, D + 1, 136) and R_w_sectors: float32 (K_s, S, D + 1, 6)
            their directions (None without sectors).
        R_w_pose: float32 (P, D + 1, 6) or None: the pose start (issue 27). P stages before all
            others regress only the camera from the features at the current landmarks, the
            shape staying the mean: the cascade proper then starts from the mean shape under the
            estimated head pose instead of zero angles.
    """

    features: str
    mean_camera: np.ndarray
    R_X: np.ndarray
    R_w: np.ndarray
    w_reg: float = DEFAULT_W_REG
    info: dict = field(default_factory=dict)
    template: np.ndarray | None = None
    refit_rounds: int = REFIT_ROUNDS
    refit_prior: float = REFIT_PRIOR
    landmarks68: np.ndarray | None = None
    sector_yaw: np.ndarray | None = None
    R_X_sectors: np.ndarray | None = None
    R_w_sectors: np.ndarray | None = None
    R_w_pose: np.ndarray | None = None
    # (model, bound model): the model with this cascade's landmarks (bind)
    _bound: tuple | None = field(default=None, init=False, repr=False, compare=False)
    # (model, mean camera bytes, one-face CascadeState): the start every face shares (initial_state)
    _mean_start: tuple | None = field(default=None, init=False, repr=False, compare=False)
    # (model, refit settings, dffx._C.Cascade): the C++ cascade run() uses for maps in CPU memory
    _native_cascade: tuple | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def stages(self) -> int:
        return self.pose_stages + len(self.R_X) + (0 if self.R_X_sectors is None else len(self.R_X_sectors))

    @property
    def pose_stages(self) -> int:
        """The camera-only stages of the pose start (0 without one)."""
        return 0 if self.R_w_pose is None else len(self.R_w_pose)

    @property
    def has_sectors(self) -> bool:
        """Whether later stages blend yaw-sector directions (:mod:`dffx.align.pose_sectors`)."""
        return self.sector_yaw is not None

    @property
    def min_score(self) -> float:
        """The alignment score under which a detected face is dropped, calibrated with this file's
        template (``info["min_score"]``, :mod:`dffx.align.score_calibration`), or
        ``UNCALIBRATED_MIN_SCORE`` (0.6, the run-3 network's) for a file without one."""
        value = self.info.get("min_score")
        return UNCALIBRATED_MIN_SCORE if value is None else float(value)

    def save(self, path) -> Path:
        """Write an .npz (float32 directions; ~9 MB for DFF, ~15 MB for SIFT at K = 3).

        With ``info["significand_bits"] = b`` (b in 10..23) the descent directions are rounded
        to b significand bits (relative rounding <= 2^-(b+1)) and the file is zlib-compressed:
        at b = 15 a three-sector DFF cascade takes about 15 instead of 20 MB
        (:func:`round_significands`). Loading needs nothing special.

        Raises:
            ValueError: ``significand_bits`` outside 10..23.
        """
        import json

        path = Path(path)
        bits = self.info.get("significand_bits")
        directions = {"R_X": self.R_X, "R_w": self.R_w}
        optional = {} if self.template is None else {"template": np.asarray(self.template, np.float32)}
        if self.landmarks68 is not None:
            optional["landmarks68"] = np.asarray(self.landmarks68, np.int64)
        if self.R_w_pose is not None:
            directions["R_w_pose"] = self.R_w_pose
        if self.has_sectors:
            optional["sector_yaw"] = np.asarray(self.sector_yaw, np.float64)
            directions.update(R_X_sectors=self.R_X_sectors, R_w_sectors=self.R_w_sectors)
        directions = {k: np.asarray(v, np.float32) if bits is None else round_significands(v, bits)
                      for k, v in directions.items()}
        write = np.savez if bits is None else np.savez_compressed
        write(path, features=self.features, mean_camera=self.mean_camera, w_reg=self.w_reg, info=json.dumps(self.info),
              **directions, **optional)
        return path

    @classmethod
    def load(cls, path) -> "Cascade":
        """Read a file written by :meth:`save`.

        Raises:
            FileNotFoundError: no such file (names the path); ValueError: a damaged or foreign
                file (truncated, bit-flipped, pickled, missing arrays), naming the path.
        """
        import json

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"cascade file {path} not found (train one with `dffx train cascade`)")
        try:
            with np.load(path) as z:
                optional = {k: z[k] for k in ("template", "landmarks68", "sector_yaw", "R_X_sectors", "R_w_sectors",
                                              "R_w_pose") if k in z.files}
                cascade = cls(features=str(z["features"]), mean_camera=z["mean_camera"], R_X=z["R_X"], R_w=z["R_w"],
                              w_reg=float(z["w_reg"]), info=json.loads(str(z["info"])), **optional)
            cascade._check_layout()
            return cascade
        except Exception as exc:  # noqa: BLE001 - BadZipFile, pickle refusal, missing keys, bad CRC, JSON, ...
            raise ValueError(f"cannot read cascade file '{path}' (damaged, or not written by `dffx train "
                             f"cascade`): {type(exc).__name__}: {exc}") from None

    def _check_layout(self) -> None:
        """Raise ValueError unless the pose-start directions fit the others and the sector arrays
        are all absent or all present and consistent."""
        if self.R_w_pose is not None and (self.R_w_pose.ndim != 3 or self.R_w_pose.shape[1:] != (self.R_X.shape[1], 6)):
            raise ValueError(f"cascade: pose-start directions of shape {self.R_w_pose.shape} do not match "
                             f"{self.R_X.shape[1]} rows")
        present = [a is not None for a in (self.sector_yaw, self.R_X_sectors, self.R_w_sectors)]
        if not any(present):
            return
        if not all(present):
            raise ValueError("cascade: sector_yaw, R_X_sectors and R_w_sectors come together")
        centres = check_sector_yaw(self.sector_yaw)
        want = (len(centres), self.R_X.shape[1])
        if (self.R_X_sectors.ndim != 4 or self.R_X_sectors.shape[1:3] != want or self.R_w_sectors.ndim != 4
                or self.R_w_sectors.shape[:3] != self.R_X_sectors.shape[:3]):
            raise ValueError(f"cascade: sector directions of shapes {self.R_X_sectors.shape} and "
                             f"{self.R_w_sectors.shape} do not match {len(centres)} sectors of {want[1]} rows")

    def bind(self, model):
        """``model`` with the landmarks this cascade regresses (``landmarks68``; the model itself
        when the cascade has none or they are the model's). Cached per model, so that the
        bound model, and the C++ twin made for it (:meth:`_native`), are made once.

        Raises:
            ValueError: landmark indices outside ``model``.
        """
        from ..model.annotated_landmarks import with_landmarks68

        if self.landmarks68 is None or np.array_equal(model.landmarks68, self.landmarks68):
            return model  # already bound: the cache keeps the model it was bound from
        if self._bound is None or self._bound[0] is not model:
            self._bound = (model, with_landmarks68(model, self.landmarks68))
        return self._bound[1]

    # ------------------------------------------------------------------ inference (eq. 4-8)
    def initial_state(self, model, batch: int, cameras=None) -> CascadeState:
        """Mean shape under the mean camera (or given (B, 6) cameras) for ``batch`` faces.

        Without ``cameras`` every face starts from the same geometry (projection, depth buffer,
        visibility), so it is computed once per model and copied.
        """
        if cameras is not None:
            cams = np.asarray(cameras, np.float64)
            return update_geometry(model, CascadeState(cams, np.zeros((len(cams), model.n_params), np.float32)))
        key = self.mean_camera.tobytes()
        if self._mean_start is None or self._mean_start[0] is not model or self._mean_start[1] != key:
            one = CascadeState(self.mean_camera[None].astype(np.float64), np.zeros((1, model.n_params), np.float32))
            self._mean_start = (model, key, update_geometry(model, one))
        start = self._mean_start[2]
        return CascadeState(*(np.repeat(a, batch, axis=0) for a in (start.camera, start.params, start.X, start.U,
                                                                     start.V)))

    def _native(self, model):
        """The C++ twin of this cascade for ``model`` (``dffx::Cascade``), made once per model and
        camera-refit setting (the file carries them)."""
        from .. import _C
        from .export import cascade_file_bytes

        settings = (self.refit_rounds, self.refit_prior)
        cached = self._native_cascade
        if cached is None or cached[0] is not model or cached[1] != settings:
            self._native_cascade = (model, settings, _C.Cascade.from_bytes(cascade_file_bytes(model, self)))
        return self._native_cascade[2]

    def step(self, model, k: int, state: CascadeState, F: np.ndarray, refit: bool = True) -> CascadeState:
        """Iteration k: eq. 4-5 updates, the eq. 6-8 shape fit per face, after the last stage
        (with ``refit``) the camera refit (``refit_rounds``), re-projection."""
        Z = _design(np.asarray(F, np.float32))
        with _blas.single_threaded_blas():
            dX, dw = self.directions(k, Z, state.camera)
            X_hat = (state.X.reshape(len(Z), -1) + dX).reshape(-1, 68, 2)
            camera = state.camera + dw.astype(np.float64)
        camera[:, 0] = np.maximum(camera[:, 0], MIN_SCALE)
        if k < self.pose_stages:  # the pose start: the camera moves, the shape stays
            return update_geometry(model, CascadeState(camera, state.params))
        return self._fit(model, X_hat, camera, refit=refit and k == self.stages - 1)

    def fit_landmarks(self, model, landmarks: np.ndarray, cameras: np.ndarray, refit: bool = True,
                      native: bool = True, threads: int = 0) -> CascadeState:
        """The cascade's 3DMM fit without its regression: the shape of eq. 6-8 fitted to
        ``landmarks`` under ``cameras``, then (with ``refit``) the camera refit's ``refit_rounds``
        rounds, each a camera refit from ``cameras`` (:mod:`dffx.align.camera_refit`) and the shape
        fit again; then the mesh's landmarks and visibility. The last stage of :meth:`step` after
        its regression, and the 3D outputs of landmarks found another way (the tiny-face network's,
        :mod:`dffx.align.tiny_route`).

        Args:
            model: :class:`dffx.FaceModel` bound to this cascade (:meth:`bind`).
            landmarks: float (F, 68, 2) in crop pixels.
            cameras: float (F, 6) start cameras (s, pitch, yaw, roll in radians, tx, ty), crop pixels.
            refit: run the camera refit rounds (the cascade file's count).
            native: the C++ twin (``dffx::Cascade::fit_landmarks``) for a DFF cascade with ``refit``;
                False (or a SIFT cascade) runs this loop.
            threads: the C++ twin's threads (0: all cores; a batch is split between them, one
                face gets them all for its mesh and visibility).

        Returns:
            :class:`CascadeState`: camera, params, X (the fitted mesh's 68 landmarks), U, V.

        Raises:
            ValueError: landmarks or cameras not finite or of the wrong shape, a scale <= 0.
        """
        X_hat = np.asarray(landmarks, np.float32)
        camera = np.asarray(cameras, np.float64)
        if X_hat.ndim != 3 or X_hat.shape[1:] != (68, 2) or camera.shape != (len(X_hat), 6):
            raise ValueError(f"landmarks must be (F, 68, 2) and cameras (F, 6), got {X_hat.shape} and {camera.shape}")
        if not (np.isfinite(X_hat).all() and np.isfinite(camera).all() and (camera[:, 0] > 0).all()):
            raise ValueError("landmarks and cameras must be finite, with scales > 0")
        if native and refit and self.features == "dff" and len(X_hat):
            result = self._native(model).fit_landmarks(X_hat, camera, threads=threads)
            return CascadeState(camera=result["cameras"], params=result["params"], X=result["landmarks"],
                                U=result["dense_landmarks"], V=result["dense_visible"].astype(bool))
        return self._fit(model, X_hat, camera, refit)

    def _fit(self, model, X_hat: np.ndarray, camera: np.ndarray, refit: bool) -> CascadeState:
        """:meth:`fit_landmarks`' loop on checked float32 (F, 68, 2) and float64 (F, 6) arrays."""
        params = self.fit_shape(model, X_hat, camera)
        if refit:
            start = camera
            mean68, basis68, _ = model.landmark_model()  # the shape at the 68 landmark vertices
            for _ in range(self.refit_rounds):
                points = mean68 + np.einsum("lcm,fm->flc", basis68, params)
                camera = refit_cameras(points, X_hat, start, prior=self.refit_prior)
                params = self.fit_shape(model, X_hat, camera)
        return update_geometry(model, CascadeState(camera, params))

    def directions(self, k: int, Z: np.ndarray, camera: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Stage k's updates (eq. 4-5) for design rows Z (B, D + 1) float32: landmark (B, 136)
        and camera (B, 6) steps; a sector stage blends its directions by the yaw of ``camera``
        (B, 6) (:func:`dffx.align.pose_sectors.sector_weights`)."""
        if k < self.pose_stages:
            return np.zeros((len(Z), self.R_X.shape[-1]), np.float32), Z @ self.R_w_pose[k]
        k -= self.pose_stages
        generic = len(self.R_X)
        if k < generic:
            return Z @ self.R_X[k], Z @ self.R_w[k]
        weights = sector_weights(camera[:, 2], self.sector_yaw).astype(np.float32)
        dX = np.zeros((len(Z), self.R_X_sectors.shape[-1]), np.float32)
        dw = np.zeros((len(Z), self.R_w_sectors.shape[-1]), np.float32)
        for s in range(weights.shape[1]):
            rows = np.flatnonzero(weights[:, s] > 0)
            if len(rows):
                a = weights[rows, s, None]
                dX[rows] += a * (Z[rows] @ self.R_X_sectors[k - generic, s])
                dw[rows] += a * (Z[rows] @ self.R_w_sectors[k - generic, s])
        return dX, dw

    def fit_shape(self, model, landmarks: np.ndarray, camera: np.ndarray) -> np.ndarray:
        """Shape parameters float32 (F, M) of eq. 6-8 for landmarks (F, 68, 2) under cameras (F, 6),
        with the landmark term in cm^2 (weights 1 / s^2, so in any pixel units) and ``w_reg``."""
        weights = np.repeat((1.0 / camera[:, 0] ** 2)[:, None], 68, axis=1)
        return fit_shape(model, landmarks, camera, landmark_weights=weights, w_reg=self.w_reg).reshape(len(camera), -1)

    def run(self, model, extractor_features, crops: np.ndarray, cameras=None, native: bool = True,
            camera_refit: bool = True) -> CascadeState:
        """Align faces in canonical crops (B, 224, 224, 3) uint8 BGR; returns the final state,
        scored against the template when the cascade has one (one more feature sampling).

        Faces run ``RUN_CHUNK`` at a time: a face's DFF maps (6.4 MB) are held through all
        iterations, so memory stays bounded for a photo of many faces. Each face's result does
        not depend on the others in its batch.

        With ``native`` (default), DFF maps in CPU memory and the mean start (no ``cameras``)
        run the C++ cascade (``dffx::Cascade``, timed against this loop, its twin, by the
        ``cascade-run`` benchmarks; landmarks within 1e-3 px of the loop's); CUDA maps, SIFT and
        given cameras run the loop below.

        ``camera_refit`` runs the camera refit after the last stage (``refit_rounds`` rounds,
        :mod:`dffx.align.camera_refit`); :class:`dffx.FaceTracker` turns it off.

        ``model`` is bound to the cascade's landmarks (:meth:`bind`) first."""
        model = self.bind(model)
        if len(crops) <= RUN_CHUNK:
            return self._run_batch(model, extractor_features, crops, cameras, native, camera_refit)
        parts = [self._run_batch(model, extractor_features, crops[lo:lo + RUN_CHUNK],
                                 None if cameras is None else cameras[lo:lo + RUN_CHUNK], native, camera_refit)
                 for lo in range(0, len(crops), RUN_CHUNK)]
        return CascadeState(*(None if getattr(parts[0], f.name) is None
                              else np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(CascadeState)))

    def _run_batch(self, model, extractor_features, crops: np.ndarray, cameras=None,
                   native: bool = True, camera_refit: bool = True) -> CascadeState:
        prepared = extractor_features.prepare(crops)
        maps = _cpu_maps(prepared) if native and cameras is None and self.features == "dff" else None
        if maps is not None:
            result = self._native(model).run(maps[0], channels_last=maps[1], camera_refit=camera_refit,
                                             threads=threads_after_network(len(crops)))
            return CascadeState(camera=result["cameras"], params=result["params"], X=result["landmarks"],
                                U=result["dense_landmarks"], V=result["dense_visible"].astype(bool),
                                score=result["scores"])
        state = self.initial_state(model, len(crops), cameras)
        for k in range(self.stages):
            F = extractor_features.sample(prepared, state.U, state.V)
            state = self.step(model, k, state, F, refit=camera_refit)
        if self.template is not None:
            state.score = alignment_score(extractor_features.sample(prepared, state.U, state.V), state.V,
                                          self.template)
        return state


def threads_after_network(faces: int) -> int:
    """The C++ cascade's threads for ``faces`` faces right after a network's forward pass: one for
    a single face, whose kernels are too short to share (the network runtime's worker threads
    still spin on the cores, and a second cascade thread fighting them made it 2-3x slower,
    docs/experiments/2026-12-07-cascade-speed.md, 2026-12-08); all cores (0) for a batch."""
    return 1 if faces == 1 else 0


def round_significands(values, bits: int) -> np.ndarray:
    """float32 ``values`` rounded to nearest with ``bits`` significand bits (of float32's 23):
    relative error <= 2^-(bits+1); the zeroed low bits let zlib compress the array.

    >>> round_significands([1 + 2 ** -20, 1 + 2 ** -14, -3.0], 15)
    array([ 1.      ,  1.000061, -3.      ], dtype=float32)

    Raises:
        ValueError: ``bits`` outside 10..23.
    """
    if not (isinstance(bits, (int, np.integer)) and 10 <= bits <= 23):
        raise ValueError(f"significand_bits must be an integer in 10..23, got {bits!r}")
    a = np.ascontiguousarray(values, np.float32)
    drop = 23 - int(bits)
    if drop == 0:
        return a.copy()
    u = a.view(np.uint32).astype(np.uint64) + (1 << (drop - 1))
    return (u.astype(np.uint32) & np.uint32(~((1 << drop) - 1) & 0xFFFFFFFF)).view(np.float32)


def _cpu_maps(prepared):
    """(float32 C-contiguous array, channels_last) for DFF maps in CPU memory that the C++
    cascade can read in place: a (B, 32, 224, 224) NumPy array, or a CPU torch tensor stored
    contiguous or channels-last (the extractor's output); None for anything else (CUDA)."""
    if isinstance(prepared, np.ndarray):
        ok = prepared.dtype == np.float32 and prepared.flags.c_contiguous and prepared.shape[-1] == CROP_SIZE
        return (prepared, False) if ok else None
    import torch

    if prepared.device.type != "cpu" or prepared.dtype != torch.float32 or prepared.shape[-1] != CROP_SIZE:
        return None
    if prepared.is_contiguous():
        return prepared.numpy(), False
    if prepared.is_contiguous(memory_format=torch.channels_last):
        return prepared.permute(0, 2, 3, 1).numpy(), True
    return None


# ---------------------------------------------------------------------- training (eq. 9-11)
def _features(extractor_features, crops_of, face_image: np.ndarray, state: CascadeState, chunk: int = 64):
    """F for every face; faces point at images via ``face_image``; images are prepared in chunks."""
    F = np.zeros((len(face_image), extractor_features.dim), np.float32)
    images = np.unique(face_image)
    for lo in range(0, len(images), chunk):
        ids = images[lo:lo + chunk]
        prepared = extractor_features.prepare(crops_of(ids))
        where = {int(i): j for j, i in enumerate(ids)}
        faces = np.flatnonzero(np.isin(face_image, ids))
        rows = np.array([where[int(i)] for i in face_image[faces]])
        F[faces] = extractor_features.sample(prepared[_index_for(prepared, rows)], state.U[faces], state.V[faces])
    return F


def _index_for(prepared, rows: np.ndarray):
    """``rows`` as an index into ``prepared`` (a NumPy array, or a torch tensor on any device)."""
    if isinstance(prepared, np.ndarray):
        return rows
    import torch

    return torch.as_tensor(rows, device=prepared.device)


def perturbed_cameras(mean_camera: np.ndarray, count: int, rng: np.random.Generator,
                      box_shift: float = DEFAULT_BOX_SHIFT, box_scale: float = DEFAULT_BOX_SCALE) -> np.ndarray:
    """Initial cameras of perturbed face boxes: scale x U(1 - box_scale, 1 + box_scale), shift
    U(-box_shift, box_shift) of the crop side in x and y (the crop is ``CROP_SCALE`` x the box)."""
    cams = np.tile(mean_camera, (count, 1))
    cams[:, 0] *= rng.uniform(1.0 - box_scale, 1.0 + box_scale, count)
    cams[:, 4:6] += rng.uniform(-box_shift, box_shift, (count, 2)) * CROP_SIZE
    return cams


def train_cascade(model, extractor_features, train, val, *, stages: int = DEFAULT_STAGES, boxes: int = 5,
                  box_shift: float = DEFAULT_BOX_SHIFT, box_scale: float = DEFAULT_BOX_SCALE,
                  w_reg: float = DEFAULT_W_REG, seed: int = 0, progress: bool = True,
                  sector_yaw=None, sector_stages: int = 0, pose_stages: int = 0) -> Cascade:
    """Learn the descent directions (eq. 9-10) with the generic face of eq. 11.

    Args:
        model: :class:`dffx.FaceModel`.
        extractor_features: :class:`DFFLandmarkFeatures` or :class:`SIFTLandmarkFeatures`.
        train, val: dicts with ``crops(ids) -> uint8 (n, 224, 224, 3)``, ``landmarks`` (N, 68, 2)
            ground truth X*, ``cameras`` (N, 6) ground truth w*; val picks the regularisers.
        stages: K iterations (paper: 3).
        boxes: perturbed initial boxes per training image (paper: 5).
        box_shift, box_scale: how far the boxes are perturbed (:func:`perturbed_cameras`).
        sector_yaw, sector_stages: the last ``sector_stages`` stages learn one set of directions
            per yaw sector (centres ``sector_yaw`` in degrees, :mod:`dffx.align.pose_sectors`),
            each a ridge regression weighted by the sector's share of every face at its current
            yaw estimate, exactly as inference blends them.
        pose_stages: camera-only stages before the ``stages`` (the pose start, issue 27): each
            a ridge regression of the camera from the features at the current landmarks; the
            shape stays the mean.

    Returns:
        :class:`Cascade`.

    Raises:
        ValueError: ``sector_stages`` outside [0, stages - 1] (the first stage has no pose
            estimate yet), negative ``pose_stages``, or bad ``sector_yaw``.
    """
    from tqdm import tqdm

    if not (isinstance(pose_stages, int) and pose_stages >= 0):
        raise ValueError(f"pose_stages must be an integer >= 0, got {pose_stages!r}")
    if not 0 <= sector_stages < stages:
        raise ValueError(f"sector_stages must be in [0, {stages - 1}] (stage 1 makes the yaw estimate); "
                         f"got {sector_stages}")
    centres = check_sector_yaw(sector_yaw) if sector_stages else None
    rng = np.random.default_rng(seed)
    mean_camera = np.r_[np.mean(train["cameras"][:, 0]), 0.0, 0.0, 0.0, np.mean(train["cameras"][:, 4:6], axis=0)]
    sets = {}
    for name, data, reps in (("train", train, boxes), ("val", val, 1)):
        n = len(data["landmarks"])
        image_of = np.repeat(np.arange(n), reps)
        cams = perturbed_cameras(mean_camera, len(image_of), rng, box_shift, box_scale)
        sets[name] = dict(data=data, image_of=image_of, X_star=data["landmarks"][image_of].reshape(len(image_of), -1),
                          w_star=data["cameras"][image_of].astype(np.float64),
                          state=CascadeState(cams, np.zeros(model.n_params, np.float32)))
    directions = {"generic": ([], []), "sectors": ([], [])}  # stage kind -> (R_X list, R_w list)
    pose_directions = []                                      # R_w of the pose-start stages
    info = {"stages": []}
    total = pose_stages + stages
    bar = tqdm(range(total), desc=f"train cascade ({extractor_features.name})", disable=not progress)
    for k in bar:
        F = {}
        for name, s in sets.items():
            update_geometry(model, s["state"])
            F[name] = _features(extractor_features, s["data"]["crops"], s["image_of"], s["state"])
        if k < pose_stages:  # the pose start: the camera alone, the shape stays
            Rw, stage_info = _fit_pose_stage(sets, F)
            pose_directions.append(Rw)
            info["stages"].append(stage_info)
            continue
        kind = "sectors" if k >= total - sector_stages else "generic"
        RX, Rw, stage_info = _fit_stage(sets, F, centres if kind == "sectors" else None)
        directions[kind][0].append(RX)
        directions[kind][1].append(Rw)
        # eq. 11: one generic shape for all training images
        cams = sets["train"]["state"].camera
        weights = np.repeat((1.0 / cams[:, 0] ** 2)[:, None], 68, axis=1)
        generic = fit_shared_shape(model, sets["train"]["X_hat"], cams, landmark_weights=weights, w_reg=w_reg)
        for s in sets.values():
            s["state"].params = generic.astype(np.float32)
        info["stages"].append(stage_info)
        bar.set_postfix(val_rmse=f"{stage_info['val_rmse_px_before']:.2f}->{stage_info['val_rmse_px_after']:.2f}px")
    info.update(train_images=int(len(train["landmarks"])), boxes=boxes, box_shift=box_shift, box_scale=box_scale,
                val_images=int(len(val["landmarks"])))
    optional = {}  # the pose start's and the yaw sectors' directions, when trained
    if pose_stages:
        info["pose_stages"] = pose_stages
        optional["R_w_pose"] = np.stack(pose_directions)
    if sector_stages:
        info.update(sector_yaw=centres.tolist(), sector_stages=sector_stages)
        optional.update(sector_yaw=centres, R_X_sectors=np.stack(directions["sectors"][0]),
                        R_w_sectors=np.stack(directions["sectors"][1]))
    template = None
    if "landmarks160" in train:
        template, info["template_images"] = training_template(extractor_features, train, rng)
    return Cascade(features=extractor_features.name, mean_camera=mean_camera, R_X=np.stack(directions["generic"][0]),
                   R_w=np.stack(directions["generic"][1]), w_reg=w_reg, info=info, template=template,
                   landmarks68=np.asarray(model.landmarks68, np.int64), **optional)


def _fit_pose_stage(sets: dict, F: dict):
    """A pose-start stage: the ridge regression (eq. 10) of the camera alone on the train set,
    its regulariser chosen on val; applied to both sets' cameras.

    Returns:
        (R_w (D + 1, 6) float32, info with the held-out yaw error before and after, degrees).
    """
    tr, va = sets["train"], sets["val"]
    dw = tr["w_star"] - tr["state"].camera
    dw_val = va["w_star"] - va["state"].camera
    sd = dw.std(0) + 1e-9
    ((Rw, lam_w, _),) = ridge_select(F["train"], [dw / sd], F["val"], [dw_val / sd])
    Rw = (Rw * sd).astype(np.float32)
    for name, s in sets.items():
        s["state"].camera = s["state"].camera + _design(F[name]) @ Rw
        s["state"].camera[:, 0] = np.maximum(s["state"].camera[:, 0], MIN_SCALE)
    after = va["w_star"] - va["state"].camera
    return Rw, {"pose_stage": True, "lambda_w": lam_w, "val_yaw_mae_deg_before": float(np.degrees(np.abs(dw_val[:, 2]).mean())),
                "val_yaw_mae_deg_after": float(np.degrees(np.abs(after[:, 2]).mean()))}


def _fit_stage(sets: dict, F: dict, centres):
    """One stage's ridge regressions (eq. 9-10) on the train set, regularisers chosen on val;
    applies them (``X_hat``, camera) to both sets.

    Returns:
        (R_X, R_w, info): generic (D + 1, 136) / (D + 1, 6) directions, or per sector
        (S, D + 1, 136) / (S, D + 1, 6) when ``centres`` is given.
    """
    tr, va = sets["train"], sets["val"]
    dX = tr["X_star"] - tr["state"].X.reshape(len(tr["image_of"]), -1)
    dX_val = va["X_star"] - va["state"].X.reshape(len(va["image_of"]), -1)
    dw = tr["w_star"] - tr["state"].camera
    dw_val = va["w_star"] - va["state"].camera
    sd = dw.std(0) + 1e-9  # camera components in comparable units for the regression
    if centres is None:
        (RX, lam_x, _), (Rw, lam_w, _) = ridge_select(F["train"], [dX, dw / sd], F["val"], [dX_val, dw_val / sd])
        Rw = (Rw * sd).astype(np.float32)
        lambdas = {"lambda_X": lam_x, "lambda_w": lam_w}
        cascade = Cascade("", np.zeros(6), RX[None], Rw[None])
    else:
        a_tr = sector_weights(tr["state"].camera[:, 2], centres)
        a_va = sector_weights(va["state"].camera[:, 2], centres)
        RX, Rw, lambdas = [], [], {"lambda_X": [], "lambda_w": []}
        for s in range(len(centres)):
            rows, rows_val = np.flatnonzero(a_tr[:, s] > 0), np.flatnonzero(a_va[:, s] > 0)
            (rx, lam_x, _), (rw, lam_w, _) = ridge_select(
                F["train"][rows], [dX[rows], dw[rows] / sd], F["val"][rows_val], [dX_val[rows_val], dw_val[rows_val] / sd],
                weights=a_tr[rows, s], val_weights=a_va[rows_val, s])
            RX.append(rx)
            Rw.append((rw * sd).astype(np.float32))
            lambdas["lambda_X"].append(lam_x)
            lambdas["lambda_w"].append(lam_w)
        RX, Rw = np.stack(RX), np.stack(Rw)
        cascade = Cascade("", np.zeros(6), RX[:0, 0], Rw[:0, 0], sector_yaw=centres, R_X_sectors=RX[None],
                          R_w_sectors=Rw[None])
    for name, s in sets.items():
        Z = _design(F[name])
        step_X, step_w = cascade.directions(0, Z, s["state"].camera)
        s["X_hat"] = (s["state"].X.reshape(len(Z), -1) + step_X).reshape(-1, 68, 2)
        s["state"].camera = s["state"].camera + step_w
    before = float(np.sqrt(np.mean(dX_val ** 2)))
    after = float(np.sqrt(np.mean((va["X_star"] - va["X_hat"].reshape(len(va["image_of"]), -1)) ** 2)))
    return RX, Rw, {**lambdas, "val_rmse_px_before": before, "val_rmse_px_after": after}


def training_template(extractor_features, data: dict, rng: np.random.Generator,
                      count: int = TEMPLATE_IMAGES) -> tuple[np.ndarray, int]:
    """The confidence template (:func:`dffx.align.confidence.landmark_template`) of up to ``count``
    random faces of a :func:`dffx.align.synth_split` dict (it needs ``landmarks160``/``visible160``).

    Returns:
        (float32 (L, C) template, number of faces used).
    """
    n = len(data["landmarks160"])
    ids = np.sort(rng.choice(n, min(count, n), replace=False))
    template = landmark_template(extractor_features, lambda i: data["crops"](ids[i]), data["landmarks160"][ids],
                                 data["visible160"][ids])
    return template, int(len(ids))
