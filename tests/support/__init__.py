"""Test helpers: fakes at the runner seam, servers on 127.0.0.1, models built for the tests."""
