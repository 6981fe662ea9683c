# syntax=docker/dockerfile:1
# Two images, one per kind of role, from one build (`make image`; docs/install.md "Building the
# images"):
#   trustgate        (the last stage, `controller`): webhook, verifier and the operator's commands;
#                    no TPM stack (tpm2-pytss and the tpm2-tss libraries are the agent's alone).
#   trustgate-agent  (`--target agent`): the node agent, with the TPM stack.
# Both install the pinned dependency set in constraints.txt, as the project's venv does.
# Pin PYTHON_IMAGE to a digest (python:3.11-slim-bookworm@sha256:...) for reproducible builds.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Few instructions on purpose: each makes a layer, and a layer is a full copy of the file system on
# storage without overlays (buildah's vfs, what the test layer uses in CI containers).

# --- requirements: pyproject's dependency lists as pip reads them, and the pins, in a stage of their
# own so that an edit elsewhere in pyproject.toml (lint settings, markers) keeps the layers below.
FROM ${PYTHON_IMAGE} AS requirements
COPY pyproject.toml constraints.txt /out/
RUN python -P -c "import tomllib; p = tomllib.load(open('/out/pyproject.toml', 'rb'))['project']; \
        open('/out/requirements.txt', 'w').write('\n'.join(p['dependencies'])); \
        open('/out/agent.txt', 'w').write('\n'.join(p['optional-dependencies']['agent']))" \
    && rm /out/pyproject.toml

# --- build: compilers and headers, never in a final stage ---------------------------------------
# tpm2-pytss has no wheels on PyPI and builds from sdist against tpm2-tss 3.2 (libtss2-dev);
# attestation.core._imafast (the IMA hot loop in C) links OpenSSL's libcrypto (libssl-dev).
# The dependencies come before the source: an edit of the code rebuilds only the last steps.
FROM ${PYTHON_IMAGE} AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev libssl-dev libtss2-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
COPY --from=requirements /out/ /src/
RUN python -m venv /opt/trustgate \
    && /opt/trustgate/bin/pip install --no-cache-dir --disable-pip-version-check --no-compile \
        -c /src/constraints.txt -r /src/requirements.txt

FROM build AS build-agent
RUN /opt/trustgate/bin/pip install --no-cache-dir --disable-pip-version-check --no-compile \
        -c /src/constraints.txt -r /src/agent.txt

# The source last (.dockerignore lets only the package and its metadata in). Checked with
# `python -P` from / : with the working directory (here the source tree, which has no compiled
# extension) first on sys.path the check would import that copy instead of the installed one.
# pip and setuptools leave the venv once it is checked: nothing installs at run time.
FROM build AS build-controller
COPY . /src/
RUN /opt/trustgate/bin/pip install --no-cache-dir --disable-pip-version-check --no-compile \
        --no-deps /src \
    && /opt/trustgate/bin/pip check \
    && /opt/trustgate/bin/python -B -P -c "import attestation.core._imafast, \
        attestation.core.logcheck_native, attestation.cli.main, webhook.app" \
    && /opt/trustgate/bin/python -m pip uninstall --quiet --yes pip setuptools

FROM build-agent AS build-agent-app
COPY . /src/
RUN /opt/trustgate/bin/pip install --no-cache-dir --disable-pip-version-check --no-compile \
        --no-deps /src \
    && /opt/trustgate/bin/pip check \
    && /opt/trustgate/bin/python -B -P -c "import tpm2_pytss.ESAPI, attestation.core._imafast, \
        attestation.core.logcheck_native, attestation.agent.app" \
    && /opt/trustgate/bin/python -m pip uninstall --quiet --yes pip setuptools

# --- runtime: Python, the venv and, for the agent, the tpm2-tss shared libraries -----------------
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 65532 trustgate \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin trustgate
# PYTHONSAFEPATH: the -P of every python in the image, so no working directory shadows a module.
ENV PATH=/opt/trustgate/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONSAFEPATH=1 \
    PYTHONUNBUFFERED=1
# VERSION: make image passes pyproject's version (after the RUN: a new version reuses its layer)
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="trustgate" \
      org.opencontainers.image.description="Attestation-gated Kubernetes for 5G core network functions" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENTRYPOINT ["trustgate"]
CMD ["--help"]

FROM runtime AS agent
# esys/sys/mu/rc/fapi/tctildr: linked by tpm2-pytss; tcti-device: loaded by tctildr for
# device:/dev/tpmrm0 (swtpm/mssim TCTIs are for tests and not installed).
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        libtss2-esys-3.0.2-0 libtss2-fapi1 libtss2-mu0 libtss2-rc0 libtss2-sys1 \
        libtss2-tctildr0 libtss2-tcti-device0 \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb /var/cache/apt/*.bin \
        /var/log/apt /var/log/dpkg.log
COPY --from=build-agent-app /opt/trustgate /opt/trustgate
LABEL org.opencontainers.image.title="trustgate-agent"
# Non-root by default; the agent DaemonSet runs it as uid 0 to read the IMA log and the TPM device
# (manifests/agent.yaml; docs/install.md "Agent privileges" for the non-root way).
USER 65532:65532

FROM runtime AS controller
COPY --from=build-controller /opt/trustgate /opt/trustgate
# Numeric, so that the kubelet can enforce runAsNonRoot.
USER 65532:65532
