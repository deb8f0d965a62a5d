"""Settings: environment variables (``REGARD_*``) over defaults, frozen once read."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import platformdirs

from regard.errors import InvalidParameter


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything an operator can tune. Each field maps to ``REGARD_<NAME>`` in the environment."""

    #: Largest encoded image accepted, in bytes (Rekognition's inline limit is 5 MB).
    max_image_bytes: int = 5 * 1024 * 1024
    #: Largest image read from S3 (Image.S3Object), in bytes: Rekognition takes 15 MB by S3Object
    #: against 5 MB inline (``max_image_bytes`` still bounds Image.Bytes).
    max_s3_image_bytes: int = 15 * 1024 * 1024
    #: Largest decoded image accepted, in pixels (width x height).
    max_image_pixels: int = 40_000_000
    #: Largest decoded image accepted, in bytes (width x height x bytes per pixel of the declared
    #: mode, checked before decoding); 0 means 4 bytes per allowed pixel.
    max_image_decoded_bytes: int = 0
    #: Face detector: "hog", "mtcnn" or "cnn" ("default" picks the measured best).
    detector: str = "default"
    #: Smallest face side, in pixels of the original image, that detection reports. 24 finds every
    #: face of detection/dlib that 20 finds, fails on fewer celeba_dev photos (15 against 18 of
    #: 1,396) and detects 1.4x faster; a face under 24 px has eyes under 10 px apart, too few to
    #: identify anyone (Rekognition's documented floor is 40 px). See docs/benchmarks.md.
    min_face_size: int = 24
    #: Longest image side fed to the detector; larger photos are scaled down for detection.
    detect_max_side: int = 1024
    #: When the default detector finds no face, retry "pad" (it again, on the image padded by 25%
    #: with its mean colour), then "pad-cnn" (dlib's MMOD CNN on that padded image), then "rot"
    #: and "rot-cnn" (each on the padded image turned by 15, 30 and 45 degrees either way); "none"
    #: turns this off. See docs/calibration.md for failure to acquire before and after each step.
    #: A detector asked for by name never falls back.
    detect_fallback: str = "pad,pad-cnn,rot,rot-cnn"
    #: A folder with normalizer.json and calibration.json made by ``regard calibrate`` on your own
    #: photos ("" = the parameters shipped with regard; a folder without normalizer.json scores
    #: raw distances). See docs/calibration.md.
    scoring_dir: str = ""
    #: Average each face's descriptor with its mirror image's (flip test-time augmentation): TAR at
    #: FMR 1e-3 on held-apart celeba_dev 0.856 -> 0.879, for twice the descriptor time. The shipped
    #: scoring parameters were fitted on flip-mean templates; turn it off only to reproduce
    #: regard before 0.2 (see docs/calibration.md).
    embed_flip: bool = True
    #: Embedding backend: "onnx" (default; same answers as dlib, see docs/benchmarks.md)
    #: or "dlib" (the reference).
    embed_backend: str = "onnx"
    #: Threads for inference (0 = library default).
    threads: int = 0
    #: onnxruntime execution provider: "auto" (CUDA when onnxruntime-gpu sees a GPU), "cpu" or "cuda".
    onnx_provider: str = "auto"
    #: Where collections, keys and audit logs live.
    data_dir: Path = Path(platformdirs.user_data_dir("regard"))
    #: PostgreSQL URL (``postgresql://user:password@host:5432/db``) holding everything nodes share:
    #: collections, faces, users, access keys, policies, the audit chain, review leads and
    #: idempotency tokens ("" = the embedded SQLite files of ``data_dir``). See docs/deployment.md.
    database_url: str = field(default="", repr=False)
    #: The Fernet key that encrypts access keys' secrets, as text (``REGARD_MASTER_KEY``; every node
    #: of one database needs the same). "" = read ``master_key_file``.
    master_key: str = field(default="", repr=False)
    #: File holding that key ("" = ``<data_dir>/master.key``, made on first use when absent).
    master_key_file: str = ""
    #: Where converted models are cached.
    cache_dir: Path = Path(platformdirs.user_cache_dir("regard"))
    #: S3-compatible endpoint that Image.S3Object reads from ("" = S3Object not available).
    s3_endpoint_url: str = ""
    #: Region and credentials for that endpoint (empty: botocore's usual credential chain).
    s3_region: str = "us-east-1"
    s3_access_key_id: str = ""
    s3_secret_access_key: str = ""
    #: Buckets Image.S3Object may read, comma-separated (case and spaces ignored); "" = any bucket
    #: the credentials reach. Others get InvalidS3ObjectException without S3 being asked.
    s3_buckets: str = ""
    #: Requests one API process works on at once; more get ProvisionedThroughputExceededException.
    api_max_inflight: int = 64
    #: Seconds a request's body may take to arrive once its headers are read (0 = no deadline);
    #: past it the request gets HTTP 408 RequestTimeoutException and its connection is closed.
    api_body_timeout: int = 10
    #: Seconds an idle keep-alive connection stays open between requests (uvicorn's timeout_keep_alive).
    api_keep_alive_timeout: int = 5
    #: Connections (and requests) one API process accepts at once before answering HTTP 503
    #: (uvicorn's limit_concurrency); 0 = no cap. Off by default: slow clients fill such a cap first
    #: and lock everyone else out, see docs/http-api.md.
    api_max_connections: int = 0
    #: The region SigV4 credential scopes must name; a request signed for another region is refused
    #: (InvalidSignatureException "Credential should be scoped to a valid region").
    region: str = "us-east-1"
    #: Seconds of the window in which unauthenticated refusals from one source address are counted.
    api_refusal_interval: int = 60
    #: Unauthenticated refusals per source and window that get an audit record each; the rest of
    #: the window's refusals are counted in one summary record written when the window ends.
    api_refusal_records: int = 10
    #: Authentication refusals per source and window answered with their own error; later ones get
    #: HTTP 503 ThrottlingException until the window ends (0 = never throttle).
    api_refusal_throttle: int = 100
    #: Seconds a reviewers' console session (``/console``) stays valid without a request; past it
    #: the reviewer signs in again (docs/review.md).
    console_idle_timeout: int = 900
    #: Seconds a console session lasts at most from its sign-in, however active (docs/review.md).
    console_session_lifetime: int = 8 * 3600
    #: Days the face crops of a decided (or withdrawn) lead are kept after the decision, so that a
    #: reviewer can look back at it; then they are deleted (docs/review.md). Enrolled crops stay
    #: while their face does.
    evidence_retention_days: int = 7
    # -- stored-video jobs (regard.video.jobs; docs/http-api.md "Stored video") --
    #: Video jobs (StartFaceDetection, StartFaceSearch) one server process runs at once, in its own
    #: worker threads beside the request path. 0 pauses processing on this node: it still accepts
    #: jobs (IN_PROGRESS), and runs them when it is restarted with workers (maintenance windows).
    video_workers: int = 1
    #: At start-up, run again from the beginning the jobs a stopped server left IN_PROGRESS (True),
    #: or fail them with a StatusMessage (False). Never left unfinished either way.
    video_resume: bool = True
    # -- video decoding (regard.video; docs/benchmarks.md "Faces in stored video") --
    #: Frames per second of video that face detection looks at (Rekognition Video samples about 5).
    video_sample_fps: float = 5.0
    #: Largest video file accepted, in bytes (Rekognition Video's limit: 10 GB).
    video_max_bytes: int = 10 * 1024**3
    #: Longest video accepted, in seconds (Rekognition Video's limit: 6 hours).
    video_max_seconds: int = 6 * 3600
    #: Largest displayed frame accepted, in pixels: 4096 x 2160 takes both 4K UHD (3840 x 2160) and
    #: DCI 4K, what phones and cameras record at most; 8K (33 Mpx a frame, four times as much to decode)
    #: is refused. Detection looks at frames scaled down to ``detect_max_side`` anyway.
    video_max_pixels: int = 4096 * 2160
    #: Smallest face side, in pixels of the displayed frame, that video analysis reports: Rekognition's
    #: documented floor. Detection cost grows with frame size over this (MTCNN's pyramid starts at
    #: 12/min); at 24 px (the photos' ``min_face_size``) a 720p frame takes 0.26 CPU s, at 40 px
    #: 0.13 s, which is what lets 5 fps take 720p faster than real time on one core (docs/benchmarks.md).
    video_min_face_size: int = 40

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Read ``REGARD_*`` variables, then apply keyword overrides."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"REGARD_{f.name.upper()}")
            if raw is None:
                continue
            default = f.default
            try:
                if isinstance(default, bool):
                    values[f.name] = raw.lower() in {"1", "true", "yes", "on"}
                elif isinstance(default, int):
                    values[f.name] = int(raw)
                elif isinstance(default, float):
                    values[f.name] = float(raw)
                elif isinstance(default, Path):
                    values[f.name] = Path(raw).expanduser()
                else:
                    values[f.name] = raw
            except ValueError as exc:
                raise InvalidParameter(f"REGARD_{f.name.upper()}={raw!r}: {exc}") from exc
        return replace(cls(**values), **overrides)
