// Rolldown settings for `jco componentize --bundle-config`: the contract's interfaces
// (`canopy:destination/...`) are the component's WIT imports, not modules to bundle.
export default {
  external: [/^canopy:/],
};
