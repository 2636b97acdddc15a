# The bakery-podmaster image that rendered podmaster.manifest files run
# (spec images.podmaster, default ghcr.io/bakery-k8s/podmaster:<version>).
#
#   docker build -t ghcr.io/bakery-k8s/podmaster:0.1.0 .
#
# Only the podmaster runs here: bakery.podmaster needs the standard library, httpx and
# three small bakery modules, so the wheel goes in without its other dependencies
# (pydantic, Jinja2, cryptography, PyYAML); tests/test_podmaster.py checks that import set.
# It runs as root because it writes into the host's /etc/kubernetes/manifests.

FROM python:3.11-slim AS build
WORKDIR /src
# the wheel carries cloudinit/, packer/ and examples/ too (pyproject's force-include)
COPY . .
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-deps /wheels/*.whl \
 && pip install --no-cache-dir "httpx>=0.27" \
 && rm -rf /wheels
ENV PYTHONUNBUFFERED=1
ENTRYPOINT ["bakery-podmaster"]
CMD ["--help"]
