"""Test doubles of the systems agentpool talks to, real enough to run end-to-end tests against."""
