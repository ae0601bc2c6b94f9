'use strict';

// The trace types Trainboard's pages draw (components/layout.py PLOTLY_TRACE_TYPES); scatter is in core.
// Copied into the plotly.js package's lib/ folder by the recipe in README.md.
var Plotly = require('./core');

Plotly.register([
    require('./heatmap'),
    require('./indicator'),
]);

module.exports = Plotly;
