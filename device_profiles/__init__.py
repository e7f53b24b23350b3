"""Built-in device profiles (YAML, validated by edgeseg.devices.DeviceProfile)."""
