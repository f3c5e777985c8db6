# imagegen-serve for KubeRay: Ray's own GPU image plus this project.
#
#   docker build -t REGISTRY/imagegen-serve:0.1.0 .
#   docker push REGISTRY/imagegen-serve:0.1.0
#
# The base tag must match the Ray version in pyproject.toml and rayVersion in
# deploy/kuberay/rayservice.yaml (a test checks all three). rayproject/ray GPU images
# carry CUDA and Python 3.11 but no torch; pip installs the CUDA build of torch from
# PyPI here (do not use constraints-cpu.txt in this image).
FROM rayproject/ray:2.60.0-py311-gpu

WORKDIR /home/ray/imagegen-serve
COPY --chown=ray:users pyproject.toml README.md serve_config.yaml ./
COPY --chown=ray:users common ./common
COPY --chown=ray:users storage ./storage
COPY --chown=ray:users deployments ./deployments
COPY --chown=ray:users serve_app ./serve_app

# A regular (non-editable) install: the four packages land in site-packages,
# so `import_path: serve_app.app:build_app` resolves in every pod.
RUN pip install --no-cache-dir . && python -c "import serve_app.app, deployments.model.engine"

# Models are built or downloaded at first start into the cache volume that the
# RayService mounts at /models (IMAGEGEN_CACHE, HF_HOME); nothing is baked in.
