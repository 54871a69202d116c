"""yaml_path, terraform_module and regex pins, and pin formats: exact reads, byte-exact writes."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from config.errors import PinAmbiguous, PinError, PinNotFound, PolicyError
from config.policy import Pin, parse_policy
from workers.pins import read_version, write_version
from workers.pins.yamlpath import parse_path


def pin(**fields: str) -> Pin:
    return Pin(file="f", **fields)  # type: ignore[arg-type]


VALUES = """\
# shop values
image:
  repository: ghcr.io/acme/shop   # where
  tag: 1.2.3
sidecars:
  - name: proxy
    tag: '0.9.0'
  - name: logger
    tag: "2.0.0"
"""


@pytest.mark.parametrize(
    ("path", "steps"),
    [
        ("image.tag", ["image", "tag"]),
        ("sidecars[1].tag", ["sidecars", 1, "tag"]),
        ("dependencies[name=redis].version", ["dependencies", ("name", "redis"), "version"]),
        ("[0].a", [0, "a"]),
    ],
)
def test_yaml_paths_parse_into_steps(path: str, steps: list[object]) -> None:
    assert parse_path(path) == steps


@pytest.mark.parametrize(
    ("path", "version", "line"),
    [
        ("image.tag", "1.3.0", "  tag: 1.3.0\n"),
        ("sidecars[0].tag", "0.10.0", "    tag: '0.10.0'\n"),
        ("sidecars[name=logger].tag", "2.1.0", '    tag: "2.1.0"\n'),
    ],
)
def test_yaml_path_writes_only_the_scalar_and_keeps_its_quotes(
    path: str, version: str, line: str
) -> None:
    after = write_version(VALUES, pin(yaml_path=path), version)
    assert line in after
    assert len(after.splitlines()) == len(VALUES.splitlines())
    assert read_version(after, pin(yaml_path=path)) == version


@pytest.mark.parametrize(
    ("version", "written"),
    [("1.10", '"1.10"'), ("0123", '"0123"'), ("1e3", '"1e3"'), ("2.1.0", "2.1.0")],
)
def test_a_plain_scalar_that_would_change_type_is_quoted(version: str, written: str) -> None:
    after = write_version(VALUES, pin(yaml_path="image.tag"), version)
    assert f"  tag: {written}\n" in after
    assert read_version(after, pin(yaml_path="image.tag")) == version


def test_yaml_path_errors_name_the_file_and_the_path() -> None:
    with pytest.raises(PinNotFound, match=r"f: no image.digest \(1 document\(s\) searched\)"):
        read_version(VALUES, pin(yaml_path="image.digest"))
    with pytest.raises(PinError, match="image is a mapping, not a version"):
        read_version(VALUES, pin(yaml_path="image"))
    with pytest.raises(PinError, match="cannot read yaml_path"):
        read_version(VALUES, pin(yaml_path="image..tag]"))


def test_a_block_scalar_cannot_hold_a_version() -> None:
    with pytest.raises(PinError, match="block scalar"):
        read_version("tag: |\n  1.0.0\n", pin(yaml_path="tag"))


MULTI = """\
kind: HelmRepository
metadata: {name: podinfo}
spec: {version: 1.0.0}
---
kind: HelmRelease
metadata: {name: podinfo}
spec: {version: 6.5.4}
---
kind: HelmRelease
metadata: {name: other}
spec: {version: 0.1.0}
"""


def test_the_document_selector_picks_one_of_several() -> None:
    assert (
        read_version(MULTI, pin(yaml_path="spec.version", document="HelmRelease/podinfo"))
        == "6.5.4"
    )
    assert read_version(MULTI, pin(yaml_path="spec.version", document="HelmRepository")) == "1.0.0"
    with pytest.raises(
        PinAmbiguous, match=r"in 2 documents \(HelmRelease/podinfo, HelmRelease/other\)"
    ):
        read_version(MULTI, pin(yaml_path="spec.version", document="HelmRelease"))
    with pytest.raises(PinAmbiguous, match="set document"):
        read_version(MULTI, pin(yaml_path="spec.version"))


TF = """\
module "app" {
  source = "git::https://example.com/infra.git//modules/app?ref=v1.2.0"
  settings = {
    source = "not this one"
  }
  label = "a } brace in a string"
}

module "registry" {
  source  = "terraform-aws-modules/vpc/aws" # registry
  version = "5.1.2"
}

module "local" {
  source = "../modules/local"
}
"""


def test_terraform_reads_the_ref_of_the_module_source() -> None:
    assert read_version(TF, pin(terraform_module="app")) == "v1.2.0"
    after = write_version(TF, pin(terraform_module="app"), "v1.3.0")
    assert after == TF.replace("?ref=v1.2.0", "?ref=v1.3.0")


def test_terraform_reads_a_registry_modules_version() -> None:
    registry = pin(terraform_module="registry", part="version")
    assert read_version(TF, registry) == "5.1.2"
    assert write_version(TF, registry, "5.2.0") == TF.replace('"5.1.2"', '"5.2.0"')


def test_terraform_errors_say_what_is_missing() -> None:
    with pytest.raises(PinNotFound, match=r"no module 'nope' \(found: app, registry, local\)"):
        read_version(TF, pin(terraform_module="nope"))
    with pytest.raises(PinNotFound, match=r"the source of module 'local' has no \?ref="):
        read_version(TF, pin(terraform_module="local"))
    with pytest.raises(PinNotFound, match=re.escape("module 'app' has no version = \"...\"")):
        read_version(TF, pin(terraform_module="app", part="version"))
    with pytest.raises(PinAmbiguous, match="appears 2 times"):
        read_version(TF + TF, pin(terraform_module="app"))


def test_regex_pins_need_exactly_one_match() -> None:
    text = "APP_VERSION=1.2.3\nOTHER_VERSION=9.9.9\n"
    regex = pin(regex=r"^APP_VERSION=(?P<version>\S+)$")
    assert read_version(text, regex) == "1.2.3"
    assert write_version(text, regex, "1.3.0") == text.replace("1.2.3", "1.3.0")
    with pytest.raises(PinAmbiguous, match=r"matches 2 times \(lines 1, 2\)"):
        read_version(text, pin(regex=r"_VERSION=(?P<version>\S+)"))
    with pytest.raises(PinNotFound, match="nothing matches"):
        read_version(text, pin(regex=r"NOPE=(?P<version>\S+)"))


def test_a_format_is_applied_both_ways() -> None:
    prefixed = pin(yaml_path="image.tag", format="release-{version}")
    text = VALUES.replace("tag: 1.2.3", "tag: release-1.2.3")
    assert read_version(text, prefixed) == "1.2.3"
    assert "tag: release-1.3.0\n" in write_version(text, prefixed, "1.3.0")
    with pytest.raises(
        PinError, match=re.escape("holds '1.2.3', which is not of the form release-{version}")
    ):
        read_version(VALUES, prefixed)


def test_pin_fields_are_checked_in_the_policy() -> None:
    base = """
repository: {url: "file:///x"}
environments: {prd: {channels: ["shell:c"], deployers: ["shell:a"]}}
apps:
  a:
    pins:
      prd:
        - {file: f, regex: 'no-group'}
        - {file: f, yaml_path: a.b, part: digest}
        - {file: f, kustomize_image: x, format: 'v{major}'}
        - {file: f, terraform_module: m, document: Kind}
"""
    with pytest.raises(PolicyError) as err:
        parse_policy(base)
    assert err.value.problems == [
        "apps.a.pins.prd[0].regex: needs a named group (?P<version>...)",
        "apps.a.pins.prd[2].format: 'v{major}' must contain {version} exactly once, {digest} "
        "at most once, and no other braces",
    ]
    fixed = base.replace("'no-group'", "'(?P<version>x)'").replace("'v{major}'", "'v{version}'")
    with pytest.raises(PolicyError) as err:
        parse_policy(fixed)
    assert err.value.problems == [
        "apps.a.pins.prd[1]: part 'digest' is not one of: nothing for yaml_path",
        "apps.a.pins.prd[3]: document only applies to yaml_path pins",
    ]


refs = st.from_regex(r"v?[0-9]{1,2}\.[0-9]{1,2}\.[0-9]{1,2}", fullmatch=True)
padding = st.sampled_from([" ", "  ", "\t"])


@given(old=refs, new=refs, pad=padding, newline=st.sampled_from(["\n", "\r\n"]), last=st.booleans())
def test_terraform_edits_only_the_ref_in_any_layout(
    old: str, new: str, pad: str, newline: str, last: bool
) -> None:
    def render(ref: str) -> str:
        lines = [
            "# comment { with braces }",
            'module "svc" {',
            f'{pad}source{pad}={pad}"github.com/acme/svc?ref={ref}"',
            f'{pad}name = "x"',
            "}",
        ]
        return newline.join(lines) + (newline if last else "")

    assert write_version(render(old), pin(terraform_module="svc"), new) == render(new)


@given(
    old=refs,
    new=refs,
    key=st.from_regex(r"[a-z][a-z_]{0,8}", fullmatch=True),
    quote=st.sampled_from(["", "'", '"']),
    newline=st.sampled_from(["\n", "\r\n"]),
)
def test_yaml_path_edits_only_the_version_in_any_layout(
    old: str, new: str, key: str, quote: str, newline: str
) -> None:
    def render(version: str) -> str:
        return newline.join(
            [
                "---",
                f"{key}:",
                f"  tag: {quote}{version}{quote}   # keep me",
                "  other: [1, 2]",
                "",
            ]
        )

    assert write_version(render(old), pin(yaml_path=f"{key}.tag"), new) == render(new)


@pytest.mark.parametrize(
    ("fields", "value"),
    [
        ({"kustomize_image": "acme/app"}, "2.1.0+build.1"),  # `+` is no tag character
        ({"kustomize_image": "acme/app"}, "-rc1"),
        ({"kustomize_image": "acme/app"}, "x" * 129),
        ({"kustomize_image": "acme/app", "part": "digest"}, "2.1.0"),
        ({"terraform_module": "net"}, "v1..2"),
        ({"terraform_module": "net"}, "v1&x=y"),
        ({"terraform_module": "net"}, "-v1"),
        ({"yaml_path": "image.tag"}, "1.0\n2.0"),
    ],
)
def test_a_pin_refuses_a_value_its_kind_cannot_hold(fields: dict[str, str], value: str) -> None:
    texts = {
        "kustomize_image": "images:\n  - name: acme/app\n    newTag: 1.0.0\n"
        "    digest: sha256:" + "a" * 64 + "\n",
        "terraform_module": 'module "net" {\n  source = "git::https://x/net.git?ref=v1.0.0"\n}\n',
        "yaml_path": "image:\n  tag: 1.0.0\n",
    }
    kind = next(k for k in texts if k in fields)
    with pytest.raises(PinError, match="cannot hold"):
        write_version(texts[kind], pin(**fields), value)


@pytest.mark.parametrize(
    ("fields", "value"),
    [
        ({"kustomize_image": "acme/app"}, "2.1.0-rc.1_linux"),
        ({"kustomize_image": "acme/app", "part": "digest"}, "sha256:" + "b" * 64),
        ({"terraform_module": "net"}, "release/v1.2.0"),
    ],
)
def test_a_pin_takes_what_its_kind_can_hold(fields: dict[str, str], value: str) -> None:
    text = (
        'module "net" {\n  source = "git::https://x/net.git?ref=v1.0.0"\n}\n'
        if "terraform_module" in fields
        else "images:\n  - name: acme/app\n    newTag: 1.0.0\n    digest: sha256:" + "a" * 64 + "\n"
    )
    assert read_version(write_version(text, pin(**fields), value), pin(**fields)) == value


def _large_kustomization(size: int) -> str:
    """A kustomization of about `size` bytes (UTF-8), its image pinned at the top."""
    head = "images:\n- name: bespinian/awesome-image\n  newTag: 2.0.0\nconfigMapGenerator:\n"
    line = "- name: cm{n}\n  literals: [key=välue {n} of a long generated configuration line]\n"
    lines, total, n = [head], len(head), 0
    while total < size:
        lines.append(line.format(n=n))
        total += len(lines[-1].encode())
        n += 1
    return "".join(lines)


def test_a_pinned_file_of_almost_a_mib_is_read_and_written_byte_exact() -> None:
    """(How fast: scripts/bench.py's `pinned 1 MiB` line; libyaml reads it in a third of a
    second where pure Python took several.)"""
    from workers.pins import MAX_PINNED_FILE

    text = _large_kustomization(MAX_PINNED_FILE - 4096)
    pin = Pin(file="k.yml", kustomize_image="bespinian/awesome-image")
    assert read_version(text, pin) == "2.0.0"
    written = write_version(text, pin, "2.1.0")
    assert written == text.replace("newTag: 2.0.0", "newTag: 2.1.0", 1)


def test_a_pinned_file_over_a_mib_is_refused_naming_its_size() -> None:
    from workers.pins import MAX_PINNED_FILE

    text = _large_kustomization(MAX_PINNED_FILE + 1024)
    pin = Pin(file="k.yml", kustomize_image="bespinian/awesome-image")
    with pytest.raises(
        PinError, match=r"k.yml is 1\d{3} KiB; releasegate edits pinned files of at most 1024 KiB"
    ):
        read_version(text, pin)


def test_a_pinned_file_only_yaml_1_2_reads_is_still_read() -> None:
    """libyaml (YAML 1.1) refuses a colon inside a flow sequence's plain scalar; the file is
    read as ruamel's own parser reads it, as before."""
    text = "owners: [slack:U1, slack:U2]\nimage:\n  tag: 2.0.0\n"
    pin = Pin(file="values.yaml", yaml_path="image.tag")
    assert read_version(text, pin) == "2.0.0"
    assert write_version(text, pin, "2.1.0") == text.replace("2.0.0", "2.1.0")
