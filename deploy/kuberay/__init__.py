"""KubeRay RayService: ``generate`` writes serveConfigV2, ``validate`` checks the manifest."""
