// The API's documentation page: Swagger UI (served by the daemon itself from the files of
// the flask-swagger-ui package) drawing the daemon's own /openapi.json. Nothing is loaded from
// anywhere else: no validator, no remote spec.
"use strict";
(function () {
  window.ui = window.SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    presets: [window.SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
})();
