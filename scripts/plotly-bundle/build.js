// Builds assets/vendor/plotly-trainboard-<version>.min.js: plotly.js with only the trace types the
// dashboard draws (scatter, heatmap, indicator). Run from an unpacked plotly.js npm package with its
// dependencies installed (this file copied there); see README.md beside it for the whole recipe.
const esbuild = require('esbuild');
const { environmentPlugin } = require('esbuild-plugin-environment');
const path = require('path');

const version = require(path.resolve('package.json')).version;
// registry.js requires maplibre-gl's CSS for map subplots, which this bundle has none of: drop it.
const noCss = { name: 'no-css', setup(b) { b.onLoad({ filter: /\.css$/ }, () => ({ contents: '', loader: 'js' })); } };

esbuild.build({
    entryPoints: ['./lib/index-trainboard.js'],
    outfile: path.resolve(process.argv[2] || `plotly-trainboard-${version}.min.js`),
    // the same settings as plotly.js's own esbuild-config.js, minified
    format: 'iife', globalName: 'Plotly', bundle: true, minify: true, sourcemap: false, legalComments: 'eof',
    plugins: [noCss, environmentPlugin({ NODE_DEBUG: false })],
    alias: { regl: '@plotly/regl', stream: 'stream-browserify' },
    define: { global: 'window', 'define.amd': 'false' },
    target: 'es2016', logLevel: 'info',
    banner: { js: `/**\n* plotly.js (trainboard: scatter, heatmap, indicator) v${version}\n* Copyright 2012-2026, Plotly, Inc.\n* All rights reserved.\n* Licensed under the MIT license\n*/` },
}).catch(() => process.exit(1));
