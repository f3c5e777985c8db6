"""Deployment tooling: the KubeRay manifest and its generator and validator."""
