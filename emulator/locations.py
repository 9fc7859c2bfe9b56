"""The locations mixin of Cloud Tasks (``google.cloud.location.Locations``): where the API
is served, as ``gcloud tasks locations list|describe`` and the clients' ``list_locations``
and ``get_location`` read it.

The emulator is one location, the configuration's ``location``, in any project (it keeps
queues in any project it is asked about). Each location reads as Google describes a Cloud
Tasks region: ``name`` ``projects/P/locations/L``, ``location_id`` L and the label
``cloud.googleapis.com/region`` L, no display name and no metadata.

ListLocations (``projects/P``) answers that one location in one page; its ``filter`` is
not applied. GetLocation answers it, and NOT_FOUND for any other location. With
``[iam] enforce`` on, they need ``cloudtasks.locations.list`` on the project and
``cloudtasks.locations.get`` on the location (roles/cloudtasks.viewer has both).
"""

from __future__ import annotations

import re

from google.cloud.location import locations_pb2

from emulator.config import EmulatorConfig
from emulator.errors import invalid, not_found
from emulator.grpc_server import GrpcRouter
from emulator.iam import Authorizer, tasks_denied
from emulator.names import LOCATION_RE, PROJECT_PATTERN

LOCATIONS = "google.cloud.location.Locations"
REGION_LABEL = "cloud.googleapis.com/region"
_PROJECT_RE = re.compile(rf"^projects/(?P<project>{PROJECT_PATTERN})$")
# Cloud Tasks' answer to a resource name it cannot parse (as names.parse_location words it).
BAD_NAME = "Invalid resource field value in the request."


class Locations:
    def __init__(self, config: EmulatorConfig, authorizer: Authorizer) -> None:
        self.location_id = config.location
        self.authorizer = authorizer

    def register(self, router: GrpcRouter) -> None:
        router.add_all(LOCATIONS, self, {
            "ListLocations": locations_pb2.ListLocationsRequest,
            "GetLocation": locations_pb2.GetLocationRequest,
        })

    def _location(self, project: str) -> locations_pb2.Location:
        location = locations_pb2.Location(
            name=f"projects/{project}/locations/{self.location_id}",
            location_id=self.location_id)
        location.labels[REGION_LABEL] = self.location_id
        return location

    def _check(self, permission: str, resource: str) -> None:
        self.authorizer.check(permission, resource, tasks_denied(permission, resource))

    def ListLocations(
        self, req: locations_pb2.ListLocationsRequest
    ) -> locations_pb2.ListLocationsResponse:
        m = _PROJECT_RE.match(req.name)
        if not m:
            raise invalid(BAD_NAME)
        self._check("cloudtasks.locations.list", req.name)
        return locations_pb2.ListLocationsResponse(locations=[self._location(m["project"])])

    def GetLocation(self, req: locations_pb2.GetLocationRequest) -> locations_pb2.Location:
        m = LOCATION_RE.match(req.name)
        if not m:
            raise invalid(BAD_NAME)
        self._check("cloudtasks.locations.get", req.name)
        if m["location"] != self.location_id:
            raise not_found(
                f'Location "{req.name}" was not found: the emulator serves the location '
                f'"{self.location_id}" (its configuration\'s location) in every project.')
        return self._location(m["project"])
