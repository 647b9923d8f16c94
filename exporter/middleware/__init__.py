"""The TaskIQ middleware and what it hands to the background writer."""
