"""Everything that writes or checks Cloud-Optimized GeoTIFFs: creation profiles, overview staging,
TIFF directory reading, COG assembly and validation."""
