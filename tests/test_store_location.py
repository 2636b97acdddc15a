"""store.url in cluster.yaml: its grammar, the per-provider defaults, the errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from bakery import spec as specmod
from bakery.errors import SpecError
from bakery.store import location

AWS = "name: prod\nprovider: aws\naws: {region: eu-west-1}\n"
GCP = "name: prod\nprovider: gcp\ngcp: {project: acme-1}\n"
LOCAL = "name: prod\nprovider: local\n"


def test_defaults_are_pure_and_per_provider(tmp_path: Path) -> None:
    aws, gcp, local = (specmod.parse(t) for t in (AWS, GCP, LOCAL))
    assert location.store_url(aws) == location.store_url(specmod.parse(AWS))  # no API call, same every time
    assert location.store_url(aws).startswith("s3://prod-bakery-") and len(location.split(location.store_url(aws))[1]) == 20
    assert location.store_url(gcp).startswith("gs://prod-bakery-")
    assert location.store_url(aws) != location.store_url(specmod.parse(AWS.replace("eu-west-1", "us-east-1")))
    assert location.store_url(local, tmp_path) == f"file://{tmp_path}/prod/store"
    for url in (location.store_url(aws), location.store_url(gcp), location.store_url(local, tmp_path)):
        assert location.check_url(url) == url
    longest = specmod.parse(AWS.replace("prod", "p" * 32))
    assert location.check_url(location.store_url(longest))


def test_a_given_url_wins() -> None:
    s = specmod.parse(AWS + "store: {url: s3://acme-state/clusters/eu}\n")
    assert location.store_url(s) == "s3://acme-state/clusters/eu"
    assert location.split(s.store.url) == ("s3", "acme-state", "clusters/eu")


@pytest.mark.parametrize(("text", "message"), [
    (AWS + "store: {url: gs://acme-state}\n", "use a s3:// URL, not gs://"),
    (GCP + "store: {url: s3://acme-state}\n", "use a gs:// URL, not s3://"),
    (LOCAL + "store: {url: s3://acme-state}\n", "use a file:// URL"),
    (AWS + "store: {url: s3://acme.state}\n", "not a valid name"),
    (AWS + "store: {url: s3://Acme}\n", "not a valid name"),
    (AWS + "store: {url: s3://ab}\n", "not a valid name"),
    (AWS + "store: {url: s3://192.168.0.1}\n", "not a valid name"),
    (AWS + "store: {url: s3://xn--bucket}\n", "reserves"),
    (GCP + "store: {url: gs://google-state}\n", "google"),
    (AWS + "store: {url: s3://acme-state/../x}\n", "prefix"),
    (AWS + "store: {url: 's3://acme-state?x=1'}\n", "no query"),
    (LOCAL + "store: {url: file://relative/x}\n", "file:///absolute"),
    (AWS + "store: {url: https://acme-state}\n", "s3://BUCKET"),
    (AWS + "store: {uri: s3://acme-state}\n", "did you mean 'url'"),
    (AWS + "store: {kms_key_id: alias/k8s}\n", "bare alias name"),
])
def test_bad_store_urls_are_one_line_with_file_line_key(text: str, message: str) -> None:
    with pytest.raises(SpecError) as e:
        specmod.parse(text, "cluster.yaml")
    (line,) = e.value.lines()
    assert line.startswith(f"cluster.yaml:{text.count(chr(10))}: store.") and message in line, line  # the last line


def test_schema_documents_the_store() -> None:
    schema = specmod.json_schema()
    props = schema["$defs"]["StoreSpec"]["properties"]
    assert set(props) == {"url", "kms_key_id"} and "s3://" in props["url"]["description"]
