// Starts Swagger UI on /docs (api/routes/ui.py): a file, not an inline script, so the
// page's Content-Security-Policy can forbid inline scripts.
"use strict";
(() => {
  const root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    domNode: root,
    layout: "BaseLayout",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    // Never ask validator.swagger.io, Swagger UI's default validator, for a badge.
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  });
})();
