"""A small, hand-written mutation check of the code that accountability rests on.

Each mutant below is a bug a person could plausibly write: one exact snippet of a source file
(it must occur exactly once) replaced by another. For each mutant the script copies the tree
(``src/``, ``tests/``, ``pyproject.toml``) into a temporary folder, applies the mutation there,
and runs the tests meant to catch it with ``PYTHONPATH=<copy>/src``, so that both pytest's own
process and the ``regard`` subprocesses that live-server tests start import the mutated package
(the venv's editable install only appends ``src`` through a ``.pth`` file, which comes after
``PYTHONPATH``; a canary checks this before anything else). The working tree is never modified.

A mutant is *killed* when its tests fail (or time out) and *survives* when they pass. The check
fails (exit 1) when a mutant survives that is not listed in :data:`EXPECTED_SURVIVORS` with the
reason it cannot or need not be killed; exit 2 means the check itself could not run (a snippet
not found exactly once, the canary, or the unmutated tests failing).

    .venv/bin/python scripts/mutation_check.py                 # every mutant
    .venv/bin/python scripts/mutation_check.py --list          # names and descriptions
    .venv/bin/python scripts/mutation_check.py --only audit-no-chain sigv4-no-compare
    .venv/bin/python scripts/mutation_check.py --git-ref HEAD  # check a commit, not the working tree

See docs/testing.md ("Mutation check").
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
PYTHON = VENV_BIN / "python"
COPIED = ("src", "tests", "pyproject.toml")
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "node_modules", ".pytest_cache")
PYTEST_ARGS = ("-x", "-q", "-p", "no:cacheprovider")
TIMEOUT_S = 240.0


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str  # relative to the repository root
    original: str  # must occur exactly once in the file
    replacement: str
    description: str
    tests: tuple[str, ...]  # pytest node ids or files, fastest killers first
    also: tuple[tuple[str, str], ...] = ()  # further (original, replacement) edits of the same file


# -- the tests each group of mutants is checked against -------------------------------------------
T = "tests/"
KILLS = T + "accountability/test_mutation_kills.py"
SIGV4_KILLS = T + "api/test_sigv4_mutation_kills.py"
LOOKUP = T + "scoring/test_calibration_lookup.py"
REVIEW_PG = T + "accountability/test_review_pg.py"

GUARD_TESTS = (
    KILLS + "::test_raised_threshold_is_what_the_operation_receives",
    KILLS + "::test_threshold_fmr_header_is_the_stricter_of_floor_and_request",
    KILLS + "::test_compare_faces_floor_ignores_the_fpir",
    KILLS + "::test_search_users_floor_counts_users_not_faces",
    T + "accountability/test_policy_review.py::test_identification_floor_rises_with_the_gallery",
    T + "accountability/test_guard.py::test_search_below_the_floor_is_refused_or_raised",
    T + "accountability/test_guard.py::test_floor_drops_matches_where_the_similarity_scale_saturates",
)
AUDIT_TESTS = (
    T + "accountability/test_audit.py",
    KILLS + "::test_rehashed_edit_is_caught_at_the_next_record",
    KILLS + "::test_a_gap_in_seq_fails_verification_even_when_the_links_hold",
)
CALIBRATION_TESTS = (
    LOOKUP,
    T + "scoring/test_calibration.py::test_similarity_scale",
    T + "scoring/test_calibration.py::test_extrapolated_tail_keeps_falling",
    T + "scoring/test_calibration.py::test_threshold_for_a_target_fmr_round_trips",
    T + "scoring/test_calibration.py::test_table_matches_the_distribution_it_was_built_from",
    T + "scoring/test_calibration.py::test_shipped_tables_are_sane",
)
ERASURE_TESTS = (
    KILLS + "::test_erasure_without_a_collection_reaches_every_collection",
    KILLS + "::test_erasing_a_user_with_more_faces_than_one_chunk",
    T + "accountability/test_erasure.py",
    T + "store/test_erasure.py::test_deleted_faces_and_collections_leave_the_sqlite_files",
)
SIGV4_TESTS = (
    T + "api/test_api_sigv4.py",
    SIGV4_KILLS,
)
KEY_TESTS = (
    T + "api/test_api_sigv4.py",
    T + "api/test_api_keys.py::test_list_and_revoke",
    T + "api/test_api_keys.py::test_revocation_reaches_other_processes_cache",
)

GUARD = "src/regard/accountability/guard.py"
POLICY = "src/regard/accountability/policy.py"
AUDIT = "src/regard/accountability/audit.py"
CALIBRATE = "src/regard/scoring/calibrate.py"
NORMALIZE = "src/regard/scoring/normalize.py"
NORMALIZE_TESTS = (
    T + "scoring/test_normalize.py",
    T + "store/test_normalized_search.py",
)
ERASURE = "src/regard/accountability/erasure.py"
METRICS = "src/regard/evaluation/metrics.py"
GATES = "src/regard/evaluation/gates.py"
BIAS = "src/regard/evaluation/bias.py"
EVAL_TESTS = (T + "evaluation/test_eval_metrics.py", T + "evaluation/test_eval_bias.py")
IDENTIFICATION = "src/regard/evaluation/identification.py"
SPLIT_TESTS = (T + "evaluation/test_eval_pairs.py",)
FALLBACK = "src/regard/face/detect/fallback.py"
FALLBACK_TESTS = (T + "face/detect/test_fallback.py",)
ASSESSMENT = "src/regard/accountability/assessment.py"
ASSESS_LIVE = (
    T + "accountability/test_assessment_live.py::test_identification_needs_an_approved_current_assessment"
)
SQL_FACES = "src/regard/store/sql_faces.py"
SQLITE = "src/regard/store/sqlite.py"
SIGV4 = "src/regard/api/rekognition/sigv4.py"
KEYS = "src/regard/keys.py"

MUTANTS: tuple[Mutant, ...] = (
    # -- identification floors (guard + policy) -------------------------------------------------
    Mutant(
        "guard-floor-noop",
        GUARD,
        "return float(m.fmr) > floor_fmr * (1 + 1e-9)",
        "return False",
        "_apply_floor keeps every match: no match is dropped for an FMR above the floor",
        GUARD_TESTS,
    ),
    Mutant(
        "guard-floor-flipped",
        GUARD,
        "return float(m.fmr) > floor_fmr * (1 + 1e-9)",
        "return float(m.fmr) < floor_fmr * (1 + 1e-9)",
        "_apply_floor comparison flipped: keeps the matches above the floor, drops those under it",
        GUARD_TESTS,
    ),
    Mutant(
        "guard-floor-loose",
        GUARD,
        "float(m.fmr) > floor_fmr * (1 + 1e-9)",
        "float(m.fmr) > floor_fmr * 10",
        "_apply_floor tolerates ten times the floor's FMR (a decade off)",
        GUARD_TESTS,
    ),
    Mutant(
        "guard-threshold-flipped",
        GUARD,
        "if requested + 1e-9 < floor_sim:",
        "if requested + 1e-9 > floor_sim:",
        "threshold check flipped: thresholds under the floor pass, those above it are denied or lowered",
        GUARD_TESTS,
    ),
    Mutant(
        "guard-deny-is-raise",
        GUARD,
        'if profile.on_low_threshold == "deny":',
        'if profile.on_low_threshold == "raise":',
        "on_low_threshold read backwards: a deny profile silently raises, a raise profile denies",
        GUARD_TESTS,
    ),
    Mutant(
        "guard-no-gallery",
        GUARD,
        "if op.gallery is not None and state is not None:",
        "if False:",
        "the gallery size is never read: the FPIR floor of a 1:N search ignores the collection's size",
        GUARD_TESTS,
    ),
    Mutant(
        "guard-gallery-faces-for-users",
        GUARD,
        'state["user_count"] if op.gallery == "users" else state["face_count"]',
        'state["face_count"]',
        "SearchUsers' gallery counted in faces instead of users",
        GUARD_TESTS,
    ),
    Mutant(
        "guard-gallery-users-for-faces",
        GUARD,
        'state["user_count"] if op.gallery == "users" else state["face_count"]',
        'state["user_count"]',
        "SearchFaces' gallery counted in users instead of faces (0 users: the FPIR floor vanishes)",
        GUARD_TESTS,
    ),
    Mutant(
        "guard-raise-not-applied",
        GUARD,
        "            params[name] = floor_sim\n",
        "",
        "raise mode records and announces the raised threshold but runs the operation with the old one",
        GUARD_TESTS,
    ),
    Mutant(
        "guard-threshold-fmr-max",
        GUARD,
        "threshold_fmr = min(floor_fmr, fmr_from_similarity(effective))",
        "threshold_fmr = max(floor_fmr, fmr_from_similarity(effective))",
        "x-regard-threshold-fmr reports the looser of floor and threshold instead of the stricter",
        GUARD_TESTS,
    ),
    Mutant(
        "policy-fpir-max",
        POLICY,
        "fmr = min(fmr, self.max_fpir / max(1, gallery_size or 0))",
        "fmr = max(fmr, self.max_fpir / max(1, gallery_size or 0))",
        "Profile.floor_fmr takes the looser of max_fmr and max_fpir/gallery",
        GUARD_TESTS,
    ),
    Mutant(
        "policy-fpir-for-compare",
        POLICY,
        "if op is not None and op.identification and self.max_fpir > 0:",
        "if self.max_fpir > 0:",
        "the per-search FPIR floor is applied to 1:1 CompareFaces too",
        GUARD_TESTS,
    ),
    # -- audit log: append and verify --------------------------------------------------------------
    Mutant(
        "audit-no-chain",
        AUDIT,
        'record["prev_hash"] = prev',
        'record["prev_hash"] = GENESIS',
        "append does not chain: every record names the genesis hash as its predecessor",
        AUDIT_TESTS,
    ),
    Mutant(
        "audit-tail-prev-hash",
        AUDIT,
        'return int(rec["seq"]), str(rec["hash"])\n        except',
        'return int(rec["seq"]), str(rec["prev_hash"])\n        except',
        "append links to the last record's predecessor instead of the last record",
        AUDIT_TESTS,
    ),
    Mutant(
        "audit-seq-repeats",
        AUDIT,
        "record = self._seal(event, seq + 1, prev)",
        "record = self._seal(event, seq, prev)",
        "append reuses the last record's seq",
        AUDIT_TESTS,
    ),
    Mutant(
        "audit-not-written",
        AUDIT,
        "            while view:\n",
        "            while False:\n",
        "append returns the sealed record without writing it",
        AUDIT_TESTS,
    ),
    Mutant(
        "audit-no-fdatasync",
        AUDIT,
        "os.fdatasync(fd)  # data and file size on disk",
        "pass  # data and file size on disk",
        "append returns before the record is on disk (fdatasync removed)",
        AUDIT_TESTS,
    ),
    Mutant(
        "audit-hash-skips-prev",
        AUDIT,
        'body = {k: v for k, v in record.items() if k != "hash"}',
        'body = {k: v for k, v in record.items() if k not in ("hash", "prev_hash")}',
        "the record hash does not cover prev_hash (an edit can be re-linked without rehashing onward)",
        AUDIT_TESTS,
    ),
    Mutant(
        "audit-hash-skips-time",
        AUDIT,
        'body = {k: v for k, v in record.items() if k != "hash"}',
        'body = {k: v for k, v in record.items() if k not in ("hash", "time")}',
        "the record hash does not cover the time",
        AUDIT_TESTS,
    ),
    Mutant(
        "audit-verify-no-link",
        AUDIT,
        'if rec.get("prev_hash") != prev:',
        "if False:",
        "verify does not check that each record names its predecessor's hash",
        AUDIT_TESTS,
    ),
    Mutant(
        "audit-verify-no-seq",
        AUDIT,
        'if rec.get("seq") != seq:',
        "if False:",
        "verify does not check that seq runs 1, 2, 3... without gaps",
        AUDIT_TESTS,
    ),
    Mutant(
        "audit-verify-no-hash",
        AUDIT,
        'if rec.get("hash") != record_hash(rec):',
        "if False:",
        "verify does not recompute the records' hashes",
        AUDIT_TESTS,
    ),
    Mutant(
        "audit-repair-unrecorded",
        AUDIT,
        "                lines.append(canonical(rec))\n",
        "",
        "a torn tail is cut off but the repair record is not written",
        AUDIT_TESTS,
    ),
    # -- fair score normalization ------------------------------------------------------------------
    Mutant(
        "normalize-first-clustering-only",
        NORMALIZE,
        "result: np.ndarray = 0.5 * self.offsets[self.clusters(t)].mean(axis=1)",
        "result: np.ndarray = 0.5 * self.offsets[self.clusters(t)[:, 0]]",
        "a template's half offset comes from the first clustering alone, not the ensemble's mean",
        NORMALIZE_TESTS,
    ),
    Mutant(
        "normalize-iterations-ignore-ensemble",
        NORMALIZE,
        "        half = 0.5 * offsets[assigned].mean(axis=1)\n",
        "        half = np.zeros(len(emb))\n",
        "every round measures the raw distances again instead of the ensemble's shifted scores",
        NORMALIZE_TESTS,
    ),
    Mutant(
        "normalize-search-bound-too-tight",
        NORMALIZE,
        "return 0.5 * float(blocks.min(axis=1).mean()), 0.5 * float(blocks.max(axis=1).mean())",
        "return 0.5 * float(blocks.min(axis=1).mean()), 0.5 * float(blocks.max(axis=1).min())",
        "a search allows for the smallest clustering's largest half offset, below what some templates have",
        NORMALIZE_TESTS,
    ),
    # -- disparity intervals (what an auditor reads a ratio's uncertainty from) ----------------------
    Mutant(
        "interval-zero-groups-not-adjusted",
        METRICS,
        "floor = 0.5 / trials",
        "floor = 0.0",
        "a group with no errors can have a rate of 0, so max/min's upper end is infinite, not half an error",
        EVAL_TESTS,
    ),
    Mutant(
        "interval-no-bonferroni",
        METRICS,
        "level = (1.0 - confidence) / len(groups)",
        "level = 1.0 - confidence",
        "every group's interval at 95% alone, so the ratio's interval holds less often than it says",
        EVAL_TESTS,
    ),
    Mutant(
        "interval-bootstrap-only",
        METRICS,
        "highs.append(max(float(b_hi), cp_hi, floor))",
        "highs.append(max(float(b_hi), floor))",
        "a group whose replicates never err gets an upper end of half an error, as if its rate were known",
        EVAL_TESTS,
    ),
    Mutant(
        "fta-differential-every-group",
        BIAS,
        "rates[g] = make_rate(err, n, min_trials=min_images)",
        "rates[g] = make_rate(err, n, min_trials=1)",
        "a group of a few images without failures, counted as half a failure, ranks as the worst",
        EVAL_TESTS,
    ),
    Mutant(
        "interval-bounds-swapped",
        GATES,
        'BOUNDS = {"upper95": 1, "lower95": 0}',
        'BOUNDS = {"upper95": 0, "lower95": 1}',
        "a gate on the upper end of a disparity's interval reads its lower end",
        EVAL_TESTS,
    ),
    Mutant(
        "interval-fta-one-group-only",
        BIAS,
        "            if options.bootstrap > 0 and spec != ALL and rates[g].estimable:\n",
        "            if options.bootstrap > 0 and spec != ALL and rates[g].estimable and not reps:\n",
        "the failure-to-acquire disparity's interval is drawn from the first group alone",
        EVAL_TESTS,
    ),
    Mutant(
        "interval-groups-share-a-seed",
        BIAS,
        "draw: int | tuple[int, int] = seed if g.spec == ALL else (seed, k)",
        "draw: int | tuple[int, int] = seed",
        "every group of a grouping is resampled with the run's seed: groups of equal size draw the "
        "same indices and their intervals move together",
        (T + "evaluation/test_eval_bias.py::test_audit_numbers_are_consistent",),
    ),
    # -- the watchlist test's split (who is on the list) -------------------------------------------
    Mutant(
        "split-by-rank",
        IDENTIFICATION,
        "chosen_names = [name for name in ranked if _draw(seed, name) < HALF_OF_DRAWS]",
        "chosen_names = ranked[: (len(ranked) + 1) // 2]",
        "exactly half the subjects enrolled by rank: a run that acquires other images moves the "
        "boundary and changes other people's roles, so two runs' watchlists no longer pair up",
        SPLIT_TESTS,
    ),
    Mutant(
        "split-by-position",
        IDENTIFICATION,
        "else [str(n) for n in image_names]",
        "else [str(i) for i in range(subj.size)]",
        "gallery images drawn by position, not by name: one image more or less reshuffles them",
        SPLIT_TESTS,
    ),
    # -- the detector fallback's rotation steps ------------------------------------------------------
    Mutant(
        "rotation-landmarks-not-turned-back",
        FALLBACK,
        "on_small = turn_back(finder.detect(picture, min_face_size=self.min_face_size), matrix)",
        "on_small = finder.detect(picture, min_face_size=self.min_face_size)",
        "a face found on a turned picture keeps the turned picture's coordinates: its chip is cut "
        "from the wrong place",
        FALLBACK_TESTS,
    ),
    Mutant(
        "rotation-no-size-floor",
        FALLBACK,
        "floor = round(ROTATE_MIN_FRACTION * min(self.small.shape[:2]))",
        "floor = 0",
        "the rotation steps look for faces of any size: slower on faceless photos, and false faces",
        FALLBACK_TESTS,
    ),
    Mutant(
        "padding-enlarges-any-size",
        FALLBACK,
        "if step in NATIVE_FACE and max(padded.shape[:2]) > PAD_UPSAMPLE_MAX_SIDE:",
        "if False:",
        "the padding steps enlarge a large padded photo: a faceless 1600x1200 photo takes seconds",
        FALLBACK_TESTS,
    ),
    Mutant(
        "padding-limit-on-the-original",
        FALLBACK,
        "if step in NATIVE_FACE and max(padded.shape[:2]) > PAD_UPSAMPLE_MAX_SIDE:",
        "if step in NATIVE_FACE and max(padded.shape[:2]) > 1.5 * PAD_UPSAMPLE_MAX_SIDE:",
        "the limit read against the unpadded side: padded photos up to 1,536 px are doubled",
        FALLBACK_TESTS,
    ),
    Mutant(
        "pad-enlarges-its-picture",
        FALLBACK,
        'NATIVE_FACE = {"pad": PNET_CELL, "pad-cnn": MMOD_WINDOW}',
        'NATIVE_FACE = {"pad": 1, "pad-cnn": MMOD_WINDOW}',
        "MTCNN's padding step enlarges a photo scaled down for detection: seconds on a 12 MP photo",
        FALLBACK_TESTS,
    ),
    # -- calibration lookup ------------------------------------------------------------------------
    Mutant(
        "calib-ln-not-log10",
        CALIBRATE,
        "-SIMILARITY_PER_DECADE * math.log10(fmr)",
        "-SIMILARITY_PER_DECADE * math.log(fmr)",
        "similarity = -20 ln(FMR) instead of -20 log10(FMR)",
        CALIBRATION_TESTS,
    ),
    Mutant(
        "calib-fmr-sign",
        CALIBRATE,
        "return float(10 ** (-s / SIMILARITY_PER_DECADE))",
        "return float(10 ** (s / SIMILARITY_PER_DECADE))",
        "fmr_from_similarity loses the minus sign",
        CALIBRATION_TESTS,
    ),
    Mutant(
        "calib-linear-interp",
        CALIBRATE,
        "return float(10 ** np.interp(distance, d, logs))",
        "return float(np.interp(distance, d, self.fmr[measured]))",
        "fmr_at interpolates the FMR linearly between rows instead of its logarithm",
        CALIBRATION_TESTS,
    ),
    Mutant(
        "calib-tail-sign",
        CALIBRATE,
        "log_fmr = anchor_log + self.tail_slope * (distance - anchor_d)",
        "log_fmr = anchor_log - self.tail_slope * (distance - anchor_d)",
        "the extrapolated tail rises instead of falling below the anchor",
        CALIBRATION_TESTS,
    ),
    Mutant(
        "calib-tail-clamped",
        CALIBRATE,
        "return float(max(10**log_fmr, FMR_FLOOR * 1e-3))",
        "return float(max(10**log_fmr, FMR_FLOOR))",
        "the extrapolated FMR stops at similarity 100's 1e-5 (the guard's FMR floor then cannot bite)",
        CALIBRATION_TESTS,
    ),
    Mutant(
        "calib-wrong-end",
        CALIBRATE,
        "return float(self.fmr[-1])",
        "return float(self.fmr[0])",
        "beyond the last row fmr_at returns the first row's FMR",
        CALIBRATION_TESTS,
    ),
    Mutant(
        "calib-skip-anchor-row",
        CALIBRATE,
        "        measured = self.distances >= anchor_d\n        d = self.distances[measured]\n"
        "        logs = np.log10(np.maximum(self.fmr[measured], 1e-300))\n        if distance >= d[-1]:",
        "        measured = self.distances > anchor_d\n        d = self.distances[measured]\n"
        "        logs = np.log10(np.maximum(self.fmr[measured], 1e-300))\n        if distance >= d[-1]:",
        "fmr_at leaves the anchor row out: just above the anchor it jumps to the next row's FMR",
        CALIBRATION_TESTS,
    ),
    Mutant(
        "calib-inverse-tail-sign",
        CALIBRATE,
        "return anchor_d + (target - anchor_log) / self.tail_slope",
        "return anchor_d - (target - anchor_log) / self.tail_slope",
        "distance_for_fmr walks the tail the wrong way",
        CALIBRATION_TESTS,
    ),
    Mutant(
        "calib-inverse-axes",
        CALIBRATE,
        "return float(np.interp(target, logs, d))",
        "return float(np.interp(target, d, logs))",
        "distance_for_fmr interpolates with the axes swapped",
        CALIBRATION_TESTS,
    ),
    Mutant(
        "calib-score-for-similarity",
        CALIBRATE,
        "return self.table.distance_for_similarity(similarity)",
        "return self.table.distance_for_fmr(similarity)",
        "Scorer.score_for_similarity passes the similarity where an FMR is expected",
        CALIBRATION_TESTS,
    ),
    Mutant(
        "calib-similarity-from-fnmr",
        CALIBRATE,
        "return similarity_from_fmr(self.fmr_at(distance))",
        "return similarity_from_fmr(self.fnmr_at(distance))",
        "the table's similarity is read from the FNMR column",
        CALIBRATION_TESTS,
    ),
    # -- erasure and the store's delete path ---------------------------------------------------
    Mutant(
        "erase-no-delete",
        ERASURE,
        "deleted.extend(service.delete_faces(cid, chunk).deleted_faces)",
        "pass",
        "erase finds the faces but never deletes them",
        ERASURE_TESTS,
    ),
    Mutant(
        "erase-no-disassociate",
        ERASURE,
        "service.disassociate_faces(cid, uid, chunk)",
        "pass",
        "faces associated with a user are not disassociated first (DeleteFaces then refuses them)",
        ERASURE_TESTS,
    ),
    Mutant(
        "erase-no-compact",
        ERASURE,
        "        service.compact()\n",
        "",
        "erase deletes the rows but does not compact: template bytes stay in the files",
        ERASURE_TESTS,
    ),
    Mutant(
        "erase-keeps-user",
        ERASURE,
        "if user_id is not None and _user_exists(service, cid, user_id):\n"
        "                service.delete_user",
        "if False:\n                service.delete_user",
        "erasing by UserId keeps the user",
        ERASURE_TESTS,
    ),
    Mutant(
        "erase-keeps-leads",
        ERASURE,
        "report.leads_deleted += review.forget_faces([f.face_id for f in faces])",
        "report.leads_deleted += 0",
        "review leads about erased faces are not deleted (the deletion only withdraws them)",
        ERASURE_TESTS,
    ),
    Mutant(
        "erase-not-audited",
        ERASURE,
        '    rec = admin_record(\n        audit, "Erase", principal=actor, parameters=params, '
        "results=report.to_json(), collection=collection_id\n    )\n",
        '    rec = {"seq": 0}\n',
        "a successful erasure leaves no audit record",
        ERASURE_TESTS,
    ),
    Mutant(
        "erase-first-collection-only",
        ERASURE,
        "out.extend(page.collection_ids)",
        "out.extend(page.collection_ids[:1])",
        "erasure without a collection reaches only the first collection",
        ERASURE_TESTS,
    ),
    Mutant(
        "erase-chunk-off-by-one",
        ERASURE,
        "yield list(items[start : start + size])",
        "yield list(items[start : start + size - 1])",
        "chunks drop their last id (the 100th face of a user is not disassociated, nor deleted)",
        ERASURE_TESTS,
    ),
    Mutant(
        "store-delete-no-row",
        SQL_FACES,
        'tx.run(f"DELETE FROM faces WHERE id IN ({_marks(len(keys))})", keys)',
        "pass",
        "DeleteFaces reports the faces deleted but leaves their rows",
        ERASURE_TESTS,
    ),
    Mutant(
        "store-delete-not-logged",
        SQL_FACES,
        "                if self.log_changes:\n                    tx.many(\n"
        "                        \"INSERT INTO changes (collection, face_key, op) VALUES (?, ?, 'del')\",",
        "                if False:\n                    tx.many(\n"
        "                        \"INSERT INTO changes (collection, face_key, op) VALUES (?, ?, 'del')\",",
        "a deletion is not written to the change log: vector indexes keep the erased templates",
        ERASURE_TESTS,
    ),
    Mutant(
        "store-no-vacuum",
        SQLITE,
        'conn.execute("VACUUM")',
        "pass",
        "compact does not VACUUM the database",
        ERASURE_TESTS,
    ),
    Mutant(
        "store-no-secure-delete",
        SQLITE,
        'conn.execute("PRAGMA secure_delete = ON")',
        'conn.execute("PRAGMA secure_delete = OFF")',
        "SQLite does not overwrite deleted content (API deletion does not VACUUM, so it shows there)",
        (*ERASURE_TESTS, T + "store/test_delete_erases.py"),
    ),
    Mutant(
        "store-no-vacuum-no-secure-delete",
        SQLITE,
        'conn.execute("VACUUM")',
        "pass",
        "both of the above: deleted rows are neither overwritten nor vacuumed away",
        ERASURE_TESTS,
        also=(('conn.execute("PRAGMA secure_delete = ON")', 'conn.execute("PRAGMA secure_delete = OFF")'),),
    ),
    # -- SigV4 verification and access keys --------------------------------------------------------
    Mutant(
        "sigv4-no-compare",
        SIGV4,
        'if not hmac.compare_digest(expected, match.group("signature").lower()):',
        "if False:",
        "the signature is computed but never compared",
        SIGV4_TESTS,
    ),
    Mutant(
        "sigv4-no-skew",
        SIGV4,
        "if abs(current - signed_at) > MAX_SKEW:",
        "if False:",
        "X-Amz-Date is not checked against the clock (replays accepted forever)",
        SIGV4_TESTS,
    ),
    Mutant(
        "sigv4-skew-one-sided",
        SIGV4,
        "if abs(current - signed_at) > MAX_SKEW:",
        "if current - signed_at > MAX_SKEW:",
        "requests dated in the future are accepted",
        SIGV4_TESTS,
    ),
    Mutant(
        "sigv4-skew-hours",
        SIGV4,
        "MAX_SKEW = timedelta(minutes=15)",
        "MAX_SKEW = timedelta(hours=15)",
        "the clock skew allowed is 15 hours instead of 15 minutes",
        SIGV4_TESTS,
    ),
    Mutant(
        "sigv4-scope-date",
        SIGV4,
        "if scope_date != stamp[:8]:",
        "if False:",
        "the credential scope's date is not compared with X-Amz-Date",
        SIGV4_TESTS,
    ),
    Mutant(
        "sigv4-host-unsigned",
        SIGV4,
        'if "host" not in signed:',
        "if False:",
        "a signature that does not cover the Host header is accepted",
        SIGV4_TESTS,
    ),
    Mutant(
        "sigv4-payload-unchecked",
        SIGV4,
        "if content_sha and content_sha != hashlib.sha256(body).hexdigest():",
        "if False:",
        "X-Amz-Content-SHA256 is trusted without hashing the body (botocore signs the header's value)",
        SIGV4_TESTS,
    ),
    Mutant(
        "sigv4-signs-present-headers",
        SIGV4,
        'signed = [h.strip().lower() for h in match.group("signed").split(";") if h.strip()]',
        'signed = sorted(h for h in lower if h != "authorization")',
        "the server signs the headers it received instead of those the client listed in SignedHeaders",
        (
            SIGV4_KILLS + "::test_live_server_checks_only_the_headers_the_client_signed",
            T + "api/test_api_sigv4.py",
        ),
    ),
    Mutant(
        "keys-revoked-accepted",
        KEYS,
        '"WHERE access_key_id = ? AND revoked_at IS NULL",',
        '"WHERE access_key_id = ?",',
        "a revoked key still signs requests",
        KEY_TESTS,
    ),
    Mutant(
        "keys-cache-forever",
        KEYS,
        "if hit is not None and now - hit[0] < self.CACHE_SECONDS:",
        "if hit is not None:",
        "a cached secret never expires: a key revoked by another process keeps working",
        KEY_TESTS,
    ),
    # -- the state nodes share in PostgreSQL (issue 16) --
    Mutant(
        "shared-master-key-unchecked",
        KEYS,
        "if row is None or not hmac.compare_digest(str(row[0]), mine):",
        "if row is None:",
        "a node with another master key opens the shared key table (and fails every signature later)",
        (T + "store/test_shared_keys.py::test_a_node_with_another_master_key_fails_at_open",),
    ),
    Mutant(
        "shared-audit-unlocked",
        "src/regard/accountability/audit_pg.py",
        'cur.execute("SELECT pg_advisory_xact_lock(?)", (AUDIT_LOCK,))',
        'cur.execute("SELECT 1")',
        "nodes append to the shared chain without the lock: two records claim one seq or one prev_hash",
        (
            T + "accountability/test_audit_pg.py::"
            "test_two_processes_and_threads_append_at_once_into_one_gapless_chain",
        ),
    ),
    Mutant(
        "shared-anchor-unauthenticated",
        "src/regard/accountability/audit_pg.py",
        "if not isinstance(mac, str) or not hmac.compare_digest(mac, expected):",
        "if not isinstance(mac, str):",
        "a forged anchor row hides records deleted from the start of the shared chain",
        (
            T + "accountability/test_audit_pg.py::"
            "test_deleting_the_first_rows_and_forging_the_anchor_fails_naming_the_anchor",
        ),
    ),
    Mutant(
        "shared-review-no-row-lock",
        "src/regard/accountability/review.py",
        'self.lock_row = " FOR UPDATE" if db.kind == "postgres" else ""',
        'self.lock_row = ""',
        "two verifiers deciding at once on two nodes: one decision is lost or a rejection is overridden",
        (
            REVIEW_PG + "::test_two_verifiers_confirming_at_once_through_two_nodes_both_count",
            REVIEW_PG + "::test_a_confirmation_racing_a_rejection_ends_rejected",
        ),
    ),
    Mutant(
        "shared-compact-no-snapshot-wait",
        "src/regard/store/postgres.py",
        "        self._wait_for_older_snapshots(conn)\n",
        "",
        "VACUUM FULL runs while another session's snapshot still sees the erased rows: it copies them",
        (T + "store/test_erasure.py::test_compaction_waits_for_a_snapshot_that_still_sees_the_erased_rows",),
    ),
    # -- human-rights impact assessments, evidence and the console (issues 17 and 18) --
    Mutant(
        "assess-gate-skipped",
        GUARD,
        "        if profile.require_assessment and op.name in GATED_OPERATIONS and collection:",
        "        if False:",
        "identification runs without an approved assessment",
        (ASSESS_LIVE,),
    ),
    Mutant(
        "assess-creator-approves",
        ASSESSMENT,
        'if principal == creator["principal"] or (',
        "if False and (",
        "the operator who created an assessment approves it",
        (ASSESS_LIVE,),
    ),
    Mutant(
        "assess-failed-gate-approved",
        ASSESSMENT,
        'if decision == "approve" and not found.record["gates_passed"]:',
        "if False:",
        "an assessment whose evaluation failed a gate is approved",
        (ASSESS_LIVE,),
    ),
    Mutant(
        "assess-expiry-ignored",
        ASSESSMENT,
        '        if now >= self.expires_at:\n            return f"it expired',
        '        if False:\n            return f"it expired',
        "an expired assessment keeps the gate open",
        (ASSESS_LIVE,),
    ),
    Mutant(
        "assess-scoring-change-ignored",
        ASSESSMENT,
        "        if scoring is not None:\n            made = ",
        "        if False:\n            made = ",
        "a change of model or scoring keeps the gate open",
        (ASSESS_LIVE,),
    ),
    Mutant(
        "assess-floor-lowering-ignored",
        ASSESSMENT,
        "if assessed_fpir > 0 and (profile.max_fpir <= 0 or profile.max_fpir > assessed_fpir * (1 + 1e-12)):",
        "if False:",
        "lowering the FPIR floor keeps the gate open",
        (ASSESS_LIVE,),
    ),
    Mutant(
        "drift-no-suspension",
        "src/regard/accountability/reviewing.py",
        "        suspend = profile.suspend_on_drift\n",
        "        suspend = False\n",
        "significant drift is recorded but the assessment stays in force",
        (
            T + "accountability/test_drift.py::"
            "test_half_the_leads_rejected_flags_drift_once_and_suspends_the_assessment",
        ),
    ),
    Mutant(
        "evidence-kept-after-delete",
        GUARD,
        'record["evidence"] = {"rows_deleted": store.forget_faces(collection, result.deleted_faces)}',
        'record["evidence"] = {"rows_deleted": 0}',
        "DeleteFaces leaves the face's crops for review behind",
        (T + "accountability/test_evidence.py::test_deleting_a_face_deletes_its_crops_from_every_file",),
    ),
    Mutant(
        "evidence-not-erased",
        ERASURE,
        "                report.crops_deleted += evidence.forget_faces(cid, ids)\n",
        "                pass\n",
        "regard erase leaves the face's crops for review behind",
        (
            T + "accountability/test_evidence.py::"
            "test_erasure_deletes_the_crops_and_subject_access_says_they_were_kept",
        ),
    ),
    Mutant(
        "console-csrf-unchecked",
        "src/regard/api/console/sessions.py",
        "        return hmac.compare_digest(digest(submitted), self.csrf_hash)",
        "        return True",
        "a console form posted without the session's CSRF token is accepted",
        (T + "console/test_console_security.py::test_state_changing_posts_need_the_sessions_csrf_token",),
    ),
    Mutant(
        "console-logout-ignored",
        "src/regard/api/console/sessions.py",
        "            if session.ended_at is not None:\n                return None\n",
        "",
        "a console session keeps working after logout",
        (T + "console/test_console_browser.py::test_a_session_is_refused_after_logout",),
    ),
    Mutant(
        "shared-policy-set-unlocked",
        "src/regard/accountability/policy.py",
        "        # Read, change and write under the lock: every node's set() sees the one before it.\n"
        "        with self.db.transaction(lock=POLICY_LOCK) as cur:",
        "        # Read, change and write under the lock: every node's set() sees the one before it.\n"
        "        with self.db.transaction() as cur:",
        "two nodes changing the policy at once: one change is lost",
        (T + "store/test_shared_policy.py::test_concurrent_changes_from_two_processes_lose_nothing",),
    ),
)

#: Mutants known to survive, and why (equivalent, or a guarantee these tests cannot observe).
EXPECTED_SURVIVORS: dict[str, str] = {
    "erase-no-compact": (
        "equivalent since deletion itself is erasure (issue 15): secure_delete zeroes the rows, the "
        "WAL is truncated and the HNSW files are dropped before the delete returns; compact is the "
        "second safeguard (VACUUM shrinks the file, the index is rebuilt)"
    ),
    "store-no-vacuum": (
        "equivalent as long as secure_delete is on: SQLite already zeroes the deleted rows, and the "
        "WAL is checkpointed and truncated; VACUUM is the second of two safeguards (it also shrinks "
        "the file). store-no-vacuum-no-secure-delete, without both, is killed"
    ),
}

CANARY = Mutant(
    "canary",
    "src/regard/__init__.py",
    '__version__ = "0.1.0"',
    '__version__ = "0.1.0+mutation-canary"',
    "not a mutant: proves that the copy, not the working tree, is imported",
    (),
)


@dataclass
class Outcome:
    mutant: Mutant
    status: str  # killed (a test failed, or the tests timed out) | survived
    by: str
    seconds: float
    output: str


def snapshot(dest: Path, git_ref: str | None) -> None:
    """The files the check works on: the working tree's, or a commit's (``git archive``)."""
    dest.mkdir(parents=True)
    if git_ref is None:
        for name in COPIED:
            src = ROOT / name
            if src.is_dir():
                shutil.copytree(src, dest / name, ignore=IGNORED)
            else:
                shutil.copy2(src, dest / name)
        return
    data = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", git_ref, *COPIED],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dest, filter="data")


def copy_tree(base: Path, dest: Path) -> None:
    shutil.copytree(base, dest, ignore=IGNORED)


def apply(tree: Path, mutant: Mutant) -> None:
    path = tree / mutant.path
    text = path.read_text(encoding="utf-8")
    for original, replacement in ((mutant.original, mutant.replacement), *mutant.also):
        count = text.count(original)
        if count != 1:
            raise SystemExit(f"{mutant.name}: a snippet occurs {count} times in {mutant.path} (must be once)")
        text = text.replace(original, replacement)
    path.write_text(text, encoding="utf-8")


def environment(tree: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree / "src")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.setdefault("REGARD_TEST_CACHE", str(ROOT / ".cache" / "test-data"))
    env.setdefault("REGARD_DATASETS", str(ROOT.parent / "shared" / "datasets"))
    return env


def check_canary(base: Path, work: Path) -> None:
    """The mutated copy must be what both pytest's process and the ``regard`` command import."""
    tree = work / "canary"
    copy_tree(base, tree)
    apply(tree, CANARY)
    env = environment(tree)
    probe = subprocess.run(
        [str(PYTHON), "-c", "import regard; print(regard.__version__, regard.__file__)"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    cli = subprocess.run(
        [str(VENV_BIN / "regard"), "--version"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    expected_file = str(tree / "src" / "regard" / "__init__.py")
    if "mutation-canary" not in probe.stdout or expected_file not in probe.stdout:
        raise SystemExit(f"canary: python imports regard from elsewhere: {probe.stdout}{probe.stderr}")
    if "mutation-canary" not in cli.stdout:
        raise SystemExit(f"canary: the regard command imports another regard: {cli.stdout}{cli.stderr}")
    shutil.rmtree(tree, ignore_errors=True)


_FAILED = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.MULTILINE)


def run_tests(tree: Path, tests: Sequence[str], timeout: float) -> tuple[int | None, str, float]:
    """Run ``tests`` in ``tree``; (exit status or None on timeout, output, seconds).

    pytest runs in a session of its own, so that on a timeout the servers its tests started go
    with it."""
    started = time.monotonic()
    proc = subprocess.Popen(
        [str(PYTHON), "-m", "pytest", *PYTEST_ARGS, *tests],
        cwd=tree,
        env=environment(tree),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return None, out, time.monotonic() - started
    return proc.returncode, out, time.monotonic() - started


def run_mutant(base: Path, work: Path, mutant: Mutant, timeout: float) -> Outcome:
    tree = work / mutant.name
    copy_tree(base, tree)
    try:
        apply(tree, mutant)
        code, out, secs = run_tests(tree, mutant.tests, timeout)
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    if code is None:
        return Outcome(mutant, "killed", f"timeout after {timeout:.0f}s", secs, out)
    if code == 0:
        return Outcome(mutant, "survived", "", secs, out)
    failed = _FAILED.findall(out)
    by = failed[0] if failed else f"pytest exit {code}"
    return Outcome(mutant, "killed", by.removeprefix("tests/"), secs, out)


def select(names: Iterable[str]) -> list[Mutant]:
    wanted = list(names)
    if not wanted:
        return list(MUTANTS)
    known = {m.name: m for m in MUTANTS}
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise SystemExit(f"unknown mutant(s): {', '.join(unknown)} (see --list)")
    return [known[n] for n in wanted]


def table(outcomes: Sequence[Outcome]) -> str:
    width = max(len(o.mutant.name) for o in outcomes)
    lines = [f"{'mutant':<{width}}  {'result':<8}  {'seconds':>7}  by", "-" * (width + 40)]
    for o in outcomes:
        result = o.status
        if o.status == "survived" and o.mutant.name in EXPECTED_SURVIVORS:
            result = "expected"
        by = o.by if o.status == "killed" else EXPECTED_SURVIVORS.get(o.mutant.name, "NO TEST FAILED")
        lines.append(f"{o.mutant.name:<{width}}  {result:<8}  {o.seconds:7.1f}  {by}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--only", nargs="+", default=[], metavar="NAME", help="run only these mutants")
    parser.add_argument("--jobs", "-j", type=int, default=1, help="mutants run at once (default 1)")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S, help="seconds per mutant's tests")
    parser.add_argument("--git-ref", help="check this commit (git archive) instead of the working tree")
    parser.add_argument("--verbose", "-v", action="store_true", help="print the output of surviving runs")
    args = parser.parse_args(argv)
    mutants = select(args.only)
    if args.list:
        width = max(len(m.name) for m in mutants)
        for m in mutants:
            print(f"{m.name:<{width}}  {m.path.removeprefix('src/regard/')}: {m.description}")
        return 0
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="regard-mutation-") as tmp:
        work = Path(tmp)
        base = work / "base"
        snapshot(base, args.git_ref)
        for m in mutants:  # every snippet must be found exactly once before anything runs
            text = (base / m.path).read_text(encoding="utf-8")
            for original, _ in ((m.original, m.replacement), *m.also):
                if text.count(original) != 1:
                    print(f"{m.name}: a snippet occurs {text.count(original)} times in {m.path}")
                    return 2
        check_canary(base, work)
        tests = list(dict.fromkeys(t for m in mutants for t in m.tests))
        code, out, secs = run_tests(base, tests, args.timeout * 4)
        if code != 0:
            print(out[-6000:])
            why = "timed out" if code is None else f"exit {code}"
            print(f"baseline failing: the unmutated tests did not pass ({why}, {secs:.0f}s)")
            return 2
        print(f"baseline: {len(tests)} test selections pass unmutated ({secs:.0f}s); {len(mutants)} mutants")
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            futures = [pool.submit(run_mutant, base, work, m, args.timeout) for m in mutants]
            outcomes = []
            for f in futures:
                o = f.result()
                outcomes.append(o)
                print(f"  {o.mutant.name}: {o.status} ({o.seconds:.1f}s)", flush=True)
    print()
    print(table(outcomes))
    killed = sum(o.status == "killed" for o in outcomes)
    survivors = [o for o in outcomes if o.status == "survived"]
    unexpected = [o for o in survivors if o.mutant.name not in EXPECTED_SURVIVORS]
    print()
    print(
        f"{len(outcomes)} mutants: {killed} killed, {len(survivors)} survived "
        f"({len(survivors) - len(unexpected)} expected); {time.monotonic() - started:.0f}s in all"
    )
    if args.verbose:
        for o in unexpected:
            print(f"\n--- {o.mutant.name} ---\n{o.output[-3000:]}")
    stale = [o.mutant.name for o in outcomes if o.status == "killed" and o.mutant.name in EXPECTED_SURVIVORS]
    if stale:
        print("killed, yet listed in EXPECTED_SURVIVORS (remove them there): " + ", ".join(stale))
    if unexpected:
        print("unexpected survivors: " + ", ".join(o.mutant.name for o in unexpected))
    return 1 if unexpected or stale else 0


if __name__ == "__main__":
    sys.exit(main())
