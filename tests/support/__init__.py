"""Test support: fakes, helper apps and servers, image helpers. No tests live here."""
