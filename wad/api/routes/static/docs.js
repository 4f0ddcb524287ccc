// The API's documentation page: Swagger UI (served by the daemon itself from the files of
// the flask-swagger-ui package) drawing the daemon's own OpenAPI document (the page names it
// in `data-url`). Nothing is loaded from anywhere else: no validator, no remote document.
"use strict";
(function () {
  const root = document.getElementById("swagger-ui");
  window.ui = window.SwaggerUIBundle({
    url: root.dataset.url,
    domNode: root,
    deepLinking: true,
    validatorUrl: null,
    presets: [window.SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
})();
