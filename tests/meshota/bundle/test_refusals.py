"""Refusals in the style of tuf-conformance: one bad thing per bundle, each refused with one line,
nothing imported (server B's artifacts, deployments and files, and the trust directory, unchanged).
The good bundle is imported by the same code first (test_good_bundle_passes), so a refusal is
caused by the one bad thing, not by the set-up."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pytest

from meshota.bundle import ArchiveLimits, BundleError, SigningRepo, import_bundle, verify
from meshota.bundle._repo import BundleMember
from tests.support.bundles import World, counts, member, past, resign, rewrite, snapshot_dir


def refused(world: World, archive: Path, match: str, trust: Path | None = None) -> str:
    trust = trust or world.trust("trust-refusal")
    before, files = counts(world.b), snapshot_dir(trust)
    with pytest.raises(BundleError, match=match) as info:
        import_bundle(archive, trust, world.ctx(world.b), dry_run=False, say=lambda _: None, run=world.b.run)
    assert "\n" not in info.value.message
    print(f"REFUSED {archive.name}: {info.value.message}")
    assert counts(world.b) == before, "something was imported"
    assert snapshot_dir(trust) == files, "the trust state moved"
    return info.value.message


@pytest.fixture(scope="module")
def good(world: World) -> Path:
    return world.export("good.tar")


def test_good_bundle_passes(world: World, good: Path) -> None:
    lines: list[str] = []
    plan = import_bundle(good, world.trust("trust-good"), world.ctx(world.b), dry_run=True, say=lines.append,
                         run=world.b.run)  # fmt: skip
    assert [d.state for d in plan.deployments] == ["new"] and len(plan.deployments[0].devices) == world.nodes
    assert any(line.startswith("ok  artifacts/") for line in lines)


def _artifact_name(archive: Path) -> str:
    with tarfile.open(archive) as tar:
        return next(n for n in tar.getnames() if n.startswith("artifacts/"))


def test_tampered_artifact(world: World, good: Path) -> None:
    name = _artifact_name(good)
    data = bytearray(member(good, name))
    data[len(data) // 2] ^= 1
    refused(
        world, rewrite(good, world.base / "t-art.tar", replace={name: bytes(data)}), f"{name} was tampered"
    )


def test_tampered_bundle_json(world: World, good: Path) -> None:
    manifest = json.loads(member(good, "bundle.json"))
    manifest["deployments"][0]["target"]["groups"] = ["everyone"]
    bad = rewrite(good, world.base / "t-json.tar", replace={"bundle.json": json.dumps(manifest).encode()})
    refused(world, bad, "bundle.json was tampered")


def test_expired_timestamp(world: World) -> None:
    refused(world, world.export("expired.tar", expires=past()), "expired metadata.*timestamp")


def test_expired_snapshot_under_fresh_timestamp(world: World) -> None:
    fresh = world.export("fresh.tar")
    bad = resign(fresh, world.base / "exp-snap.tar", world.repo.dir / "online", snapshot_expires=past())
    refused(world, bad, "expired metadata.*snapshot")


def test_rollback_to_an_older_bundle(world: World) -> None:
    older, newer = world.export("older.tar"), world.export("newer.tar")
    trust = world.trust("trust-rollback")
    with verify(newer, trust) as accepted:
        accepted.accept()  # the site took the newer one (trust state only)
    refused(world, older, "rollback", trust)


@pytest.mark.parametrize("role", ["targets", "snapshot", "timestamp"])
def test_metadata_mixed_from_two_bundles(world: World, role: str) -> None:
    first, second = world.export(f"mix-1-{role}.tar"), world.export(f"mix-2-{role}.tar")
    name = f"metadata/{role}.json"
    bad = rewrite(second, world.base / f"mixed-{role}.tar", replace={name: member(first, name)})
    refused(world, bad, "mixed")


def test_snapshot_resigned_over_another_bundles_targets(world: World) -> None:
    """Even the online key cannot splice bundle 1's targets under bundle 2's manifest."""
    first, second = world.export("splice-1.tar"), world.export("splice-2.tar")
    bad = resign(second, world.base / "spliced.tar", world.repo.dir / "online", targets_from=first)
    refused(world, bad, "tampered|mixed|not in the signed targets")


def test_wrong_keys(world: World) -> None:
    stranger = SigningRepo.init(world.base / "repo-stranger", world.base / "root-keys-stranger")
    bad = world.export("stranger.tar", repo=stranger)
    refused(world, bad, "signature check failed")


def test_revoked_online_key(world: World, tmp_path: Path) -> None:
    before = tmp_path / "repo-before-rotation"
    shutil.copytree(world.repo.dir, before)
    world.repo.rotate_root(world.root_keys, new_online_keys=1)
    trust = world.trust("trust-rotated")
    with verify(world.export("after-rotation.tar"), trust) as ok:
        assert ok.version > 0
        ok.accept()  # the site now trusts root v2, which revoked the old online key
    old_key = world.export("old-key.tar", repo=SigningRepo(before))
    refused(world, old_key, "signature check failed", trust)


def test_root_rotation_is_followed(world: World) -> None:
    version = world.repo.rotate_root(world.root_keys, new_root_keys=2, root_threshold=2)
    lines: list[str] = []
    trust = world.trust("trust-follows")
    with verify(world.export("rotated-root.tar"), trust, report=lines.append) as ok:
        ok.accept()
    assert any(f"v1 -> v{version}" in line for line in lines)
    assert (trust / "root_history" / f"{version}.root.json").exists()


def test_root_signed_only_by_new_keys(world: World) -> None:
    """Root N+1 must carry a threshold of root N's keys: a fresh key alone cannot rotate."""
    from securesystemslib.signer import CryptoSigner
    from tuf.api.metadata import Metadata, Root

    good = world.export("for-forged-root.tar")
    with tarfile.open(good) as tar:
        chain = sorted((n for n in tar.getnames() if n.endswith(".root.json")), key=len)
    last = Metadata[Root].from_bytes(member(good, chain[-1]))
    forged = Metadata[Root].from_bytes(last.to_bytes())
    forged.signed.version += 1
    thief = CryptoSigner.generate_ed25519()
    for keyid in list(forged.signed.roles["root"].keyids):
        forged.signed.revoke_key(keyid, "root")
    forged.signed.add_key(thief.public_key, "root")
    forged.signed.roles["root"].threshold = 1
    forged.signatures.clear()
    forged.sign(thief)
    tinfo = tarfile.TarInfo(f"metadata/{forged.signed.version}.root.json")
    data = forged.to_bytes()
    tinfo.size = len(data)
    bad = rewrite(good, world.base / "forged-root.tar", add=[(tinfo, data)])
    refused(world, bad, "signature check failed")


def test_missing_artifact(world: World, good: Path) -> None:
    bad = rewrite(good, world.base / "missing.tar", replace={_artifact_name(good): None})
    refused(world, bad, "missing artifacts/")


def test_member_not_in_signed_targets(world: World, good: Path) -> None:
    info = tarfile.TarInfo("artifacts/" + "ab" * 32 + ".mender")
    info.size = 4
    bad = rewrite(good, world.base / "injected.tar", add=[(info, b"evil")])
    refused(world, bad, "not in the signed targets")


def _raw(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info


@pytest.mark.parametrize(
    ("info", "match"),
    [
        (_raw("../../etc/cron.d/x"), "path traversal"),
        (_raw("/etc/passwd"), "path traversal"),
        (_raw("artifacts/../../x"), "path traversal"),
        (_raw("artifacts/" + "cd" * 32 + ".mender", tarfile.SYMTYPE, "/etc/shadow"), "is a link"),
        (_raw("artifacts/" + "ef" * 32 + ".mender", tarfile.LNKTYPE, "bundle.json"), "is a link"),
        (_raw("artifacts", tarfile.DIRTYPE), "not a regular file"),
        (_raw("notes.txt"), "not part of the bundle layout"),
    ],
)
def test_archive_paths_and_links(world: World, good: Path, info: tarfile.TarInfo, match: str) -> None:
    data = b"" if info.type == tarfile.REGTYPE else None
    bad = rewrite(good, world.base / "paths.tar", add=[(info, data)])
    refused(world, bad, match)


def test_duplicate_member(world: World, good: Path) -> None:
    info = tarfile.TarInfo("bundle.json")
    data = member(good, "bundle.json")
    info.size = len(data)
    refused(world, rewrite(good, world.base / "dup.tar", add=[(info, data)]), "appears twice")


def test_size_limits(world: World, good: Path) -> None:
    trust = world.trust("trust-limits")
    with pytest.raises(BundleError, match="over its limit"):
        with verify(good, trust, limits=ArchiveLimits(targets_max=100)):
            pass
    with pytest.raises(BundleError, match="more than 3 members"):
        with verify(good, trust, limits=ArchiveLimits(max_members=3)):
            pass


def test_not_an_archive(world: World) -> None:
    junk = world.base / "junk.tar"
    junk.write_bytes(b"\x00garbage" * 100)
    refused(world, junk, "not a bundle archive|empty|damaged")


def test_mix_and_match_signed_by_the_real_key(world: World, good: Path) -> None:
    """Two targets for one group and device type, signed properly: the site still refuses."""
    manifest = json.loads(member(good, "bundle.json"))
    twin = dict(manifest["deployments"][0], key="twin", name="the same group again")
    twin["target"] = dict(twin["target"], groups=["rig-7"], devices=[])
    manifest["deployments"][0]["target"] = dict(twin["target"])
    manifest["deployments"].append(twin)
    name = _artifact_name(good)
    out = world.base / "mix-and-match.tar"
    with world.repo.locked() as versions:
        manifest["version"] = world.repo.next_version(versions)
        members = [
            BundleMember("bundle.json", data=json.dumps(manifest).encode()),
            BundleMember(name, data=member(good, name)),
        ]
        world.repo.write_bundle(out, members, versions=versions, expires=past(-30))
    refused(world, out, "mix-and-match")
