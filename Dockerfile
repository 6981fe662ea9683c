# syntax=docker/dockerfile:1
# One image for every role: `trustgate agent | verifier | webhook | audit ...`.
#   docker build -t trustgate:0.1.0 .
# Pin PYTHON_IMAGE to a digest (python:3.11-slim-bookworm@sha256:...) for reproducible builds.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- builder: tpm2-pytss has no wheels on PyPI and builds from sdist against tpm2-tss 3.2 -----
# attestation.core._imafast (the IMA hot loop in C) links OpenSSL's libcrypto; the runtime image has
# libssl3 already (python needs it).
FROM ${PYTHON_IMAGE} AS builder
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev libtss2-dev libssl-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/trustgate
WORKDIR /src
COPY pyproject.toml README.md ./
COPY attestation ./attestation
COPY webhook ./webhook
RUN /opt/trustgate/bin/pip install --no-compile . \
    && /opt/trustgate/bin/python -c "import tpm2_pytss.ESAPI, attestation.core._imafast, attestation.cli.main, webhook.app"

# --- runtime: the venv plus the tpm2-tss shared libraries tpm2-pytss links and dlopens --------
FROM ${PYTHON_IMAGE}
# esys/sys/mu/rc/fapi/tctildr: linked by tpm2-pytss; tcti-device: loaded by tctildr for
# device:/dev/tpmrm0 (swtpm/mssim TCTIs are for tests and not installed).
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        libtss2-esys-3.0.2-0 libtss2-fapi1 libtss2-mu0 libtss2-rc0 libtss2-sys1 \
        libtss2-tctildr0 libtss2-tcti-device0 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 65532 trustgate \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin trustgate
COPY --from=builder /opt/trustgate /opt/trustgate
ENV PATH=/opt/trustgate/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Numeric, so that the kubelet can enforce runAsNonRoot. The agent DaemonSet overrides it
# (runAsUser: 0) to read the IMA log and the TPM device; see manifests/agent.yaml.
USER 65532:65532
ENTRYPOINT ["trustgate"]
CMD ["--help"]
